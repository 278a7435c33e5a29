"""
HTTP plumbing shared by the pages and the JSON API: a route table, asynchronous handlers,
error responses, security headers and bounded request bodies.

Handlers are coroutines; :class:`RoutedResource` runs them, turns :class:`HTTPError` into an
error response (JSON for the API, an HTML page for the pages) and never lets a traceback out
to the client.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

__all__ = [
    "body_size",
    "HTTPError",
    "Route",
    "RoutedResource",
    "is_finished",
    "json_too_deep",
    "read_body",
    "read_form",
    "read_json",
    "security_headers",
    "write_json",
]

log = Logger(namespace="clicktodial.web")

#: No inline script or style, nothing from another origin, never framed.
CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    b" connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none';"
    b" object-src 'none'"
)


class HTTPError(Exception):
    """
    Answer the request with ``status`` and ``message`` (``{"error": message}`` in the API).

    :ivar headers: extra response headers (e.g. ``Retry-After``).
    """

    def __init__(self, status: int, message: str, headers: dict[bytes, bytes] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def security_headers(request: Request, private: bool = True) -> None:
    """Set the headers every response carries; ``private`` ones are never cached."""
    request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"same-origin")
    if private:
        request.setHeader(b"cache-control", b"no-store")


def is_finished(request: Request) -> bool:
    """Whether the response is complete or the client went away (nothing may be written)."""
    return bool(request.finished or request.channel is None)


def write_json(request: Request, status: int, value: object) -> None:
    """Finish ``request`` with ``value`` as JSON."""
    if is_finished(request):
        return
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.write(json.dumps(value, separators=(",", ":")).encode("utf-8"))
    request.finish()


def body_size(request: Request) -> int:
    """The length of the request body in bytes (Twisted has read it whole already)."""
    content = request.content
    if content is None:
        return 0
    size = content.seek(0, io.SEEK_END)
    content.seek(0)
    return int(size)


def read_body(request: Request) -> bytes:
    """The request body (its size was bounded by :class:`RoutedResource`, else 413)."""
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data: bytes = content.read()
    return data


#: How deeply arrays and objects may nest in a JSON body. The API's bodies are flat objects;
#: json.loads recurses once per level and raises RecursionError near 1,000.
MAX_JSON_DEPTH = 20

# A string, closed or running to the end of the text (a trailing lone backslash included):
# it matches at every quote it is tried at, so removing strings is one linear pass.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep in ``body`` (strings aside)."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = 0
    for c in brackets:
        if c in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _no_constant(name: str) -> object:
    # NaN, Infinity and -Infinity are not JSON (RFC 8259 §6); json.loads takes them.
    raise ValueError(f"{name} is not a JSON value")


def read_json(request: Request) -> dict[str, Any]:
    """
    The request body as a JSON object (RFC 8259; at most :data:`MAX_JSON_DEPTH` levels).

    A refused body is logged in one line (no traceback): too deep, not UTF-8, not JSON
    (including an integer of more than 4,300 digits, which ``int()`` refuses).

    :raises HTTPError: 400 if it is not one, 413 if too large.
    """
    body = read_body(request)
    try:
        if json_too_deep(body):
            raise HTTPError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise HTTPError(400, "the request body is not valid JSON") from None
        if not isinstance(value, dict):
            raise HTTPError(400, "the request body must be a JSON object")
    except HTTPError as error:
        log.info(
            "refused a JSON body of {size} bytes to {path}: {problem}",
            size=len(body),
            path=request.path.decode("latin-1"),
            problem=error.message,
        )
        raise
    return value


def read_form(request: Request) -> dict[str, str]:
    """
    The fields of a urlencoded form POST (first value of each), decoded as UTF-8.

    :raises HTTPError: 400 for a field that is not UTF-8.
    """
    fields: dict[str, str] = {}
    for name, values in (request.args or {}).items():
        if not values:
            continue
        try:
            fields[name.decode("utf-8")] = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(400, "form fields must be UTF-8") from None
    return fields


Handler = Callable[..., Awaitable[object]]


@attrs.frozen
class Route:
    """
    One ``method`` on a ``path`` template such as ``/calls/{id}`` (a ``{name}`` matches one
    non-empty path segment and is passed to the handler as a keyword argument).
    """

    method: str
    path: str
    handler: Handler
    pattern: re.Pattern[str] = attrs.field(init=False)

    @pattern.default
    def _compile(self) -> re.Pattern[str]:
        parts = re.split(r"\{(\w+)\}", self.path)
        regex = "".join(
            f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(parts)
        )
        return re.compile(regex + r"\Z")


class RoutedResource(Resource):
    """
    A leaf resource dispatching on method and the rest of the path through a route table.

    Subclasses provide :meth:`routes` and :meth:`error`; a handler returns the body as bytes,
    or None once it has finished the request itself (or keeps it open to stream).

    :param max_body: the largest request body accepted, in bytes (``[web] max_body``);
        a larger one gets 413 whatever the path.
    """

    isLeaf = True

    def __init__(self, max_body: int) -> None:
        super().__init__()
        self.max_body = max_body

    def routes(self) -> Sequence[Route]:
        raise NotImplementedError

    def error(self, request: Request, error: HTTPError) -> None:
        """Answer ``request`` with ``error``."""
        raise NotImplementedError

    def path_of(self, request: Request) -> str:
        """The path below this resource, e.g. ``/calls/abc``."""
        segments = [s.decode("utf-8", "replace") for s in request.postpath or []]
        return "/" + "/".join(segments) if segments != [""] else "/"

    def render(self, request: Request) -> object:
        security_headers(request)
        method = request.method.decode("ascii", "replace")
        path = self.path_of(request)
        if body_size(request) > self.max_body:
            self._answer(
                request, HTTPError(413, f"the request body is larger than {self.max_body} bytes")
            )
            return NOT_DONE_YET
        allowed = []
        for route in self.routes():
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method != method and not (method == "HEAD" and route.method == "GET"):
                allowed.append(route.method)
                continue
            d = Deferred.fromCoroutine(_run(route.handler, request, match.groupdict()))
            d.addErrback(self._failed, request)
            return NOT_DONE_YET
        if allowed:
            error = HTTPError(405, "method not allowed", {b"allow": ", ".join(allowed).encode()})
        else:
            error = HTTPError(404, "not found")
        self._answer(request, error)
        return NOT_DONE_YET

    def _failed(self, failure: Failure, request: Request) -> None:
        if isinstance(failure.value, HTTPError):
            error = failure.value
        else:
            log.failure("web request failed: {path}", failure, path=request.path)
            error = HTTPError(500, "internal error")
        self._answer(request, error)

    def _answer(self, request: Request, error: HTTPError) -> None:
        if is_finished(request):
            return
        for name, value in error.headers.items():
            request.setHeader(name, value)
        self.error(request, error)


async def _run(handler: Handler, request: Request, params: dict[str, str]) -> None:
    # A handler returning bytes has them written as the body; one returning None has
    # finished the request itself, or streams it (server-sent events).
    result = await handler(request, **params)
    if isinstance(result, bytes) and not is_finished(request):
        request.write(result)
        request.finish()
