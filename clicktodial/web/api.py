"""
The JSON API, ``/api/v1``; described by ``/api/v1/openapi.json`` (``openapi.json`` next to
this module: a test checks that it and :meth:`ApiResource.routes` name the same routes).

Authentication: ``Authorization: Bearer <token>`` (tokens from ``clicktodial token create``),
or the browser's session cookie with the session's CSRF token in ``X-CSRF-Token`` on
state-changing requests. Every error is ``{"error": "..."}`` with its status.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files

from twisted.web.server import Request

from clicktodial.calls.events import CallInfo
from clicktodial.store.values import USERNAME_PATTERN
from clicktodial.web.app import Principal, WebApp, call_json, registration_json
from clicktodial.web.http import HTTPError, Route, RoutedResource, read_json, write_json
from clicktodial.web.trace import trace_json, trace_pcap, trace_text

__all__ = ["API_PREFIX", "ApiResource", "openapi_document"]

#: Where the API is mounted.
API_PREFIX = "/api/v1"

#: Bounds of ``GET /api/v1/calls?limit=``.
DEFAULT_PAGE = 20
MAX_PAGE = 100


def openapi_document() -> bytes:
    """The OpenAPI 3.1 description of the API (``openapi.json``)."""
    return files("clicktodial.web").joinpath("openapi.json").read_bytes()


def _int_arg(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = (request.args or {}).get(name.encode())
    if not raw:
        return default
    try:
        value = int(raw[0])
    except ValueError:
        raise HTTPError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise HTTPError(400, f"{name} must be between {low} and {high}")
    return value


def _batch(calls: object) -> list[tuple[str, str]]:
    """The (caller, callee) pairs of a batch's ``calls`` list.

    :raises HTTPError: 400 for anything but a list of ``{"caller": NAME, "callee": NAME}``.
    """
    if not isinstance(calls, list):
        raise HTTPError(400, 'calls must be a list of {"caller": ..., "callee": ...}')
    pairs = []
    valid = USERNAME_PATTERN.fullmatch
    for index, item in enumerate(calls):
        # Checked inline, without a generator or a function per name: ~20 calls a batch.
        caller = item.get("caller") if isinstance(item, dict) and len(item) == 2 else None
        callee = item.get("callee") if caller is not None else None
        if (
            not isinstance(caller, str)
            or not isinstance(callee, str)
            or valid(caller) is None
            or valid(callee) is None
        ):
            raise HTTPError(
                400, f'calls[{index}] must be {{"caller": USERNAME, "callee": USERNAME}}'
            )
        pairs.append((caller, callee))
    return pairs


class ApiResource(RoutedResource):
    """``/api/v1``: the JSON API over a :class:`WebApp`."""

    def __init__(self, app: WebApp) -> None:
        super().__init__(app.limits.max_body)
        self.app = app
        # Built once: each Route compiles its pattern (a request would compile ten).
        self._routes = self._route_table()

    def routes(self) -> Sequence[Route]:
        return self._routes

    def _route_table(self) -> tuple[Route, ...]:
        return (
            Route("GET", "/openapi.json", self.openapi),
            Route("GET", "/users", self.list_users),
            Route("GET", "/me", self.me),
            Route("GET", "/calls", self.list_calls),
            Route("POST", "/calls", self.place_call),
            Route("GET", "/calls/{call_id}", self.get_call),
            Route("DELETE", "/calls/{call_id}", self.hang_up),
            Route("GET", "/calls/{call_id}/trace", self.get_trace),
            Route("GET", "/calls/{call_id}/trace.pcap", self.get_trace_pcap),
            Route("GET", "/events", self.events),
        )

    def error(self, request: Request, error: HTTPError) -> None:
        write_json(request, error.status, {"error": error.message})

    async def _principal(self, request: Request) -> Principal:
        principal = await self.app.authenticate(request)
        if principal is None:
            raise HTTPError(
                401, "authentication required", {b"www-authenticate": b'Bearer realm="clicktodial"'}
            )
        return principal

    async def openapi(self, request: Request) -> bytes:
        """The API description (public)."""
        request.setHeader(b"content-type", b"application/json")
        return openapi_document()

    async def list_users(self, request: Request) -> None:
        """Every user with their presence (and contacts: mine, or everyone's for an admin)."""
        principal = await self._principal(request)
        now = self.app.clock.seconds()
        listing = [
            {
                "display_name": user.display_name,
                **registration_json(
                    registration, now, contacts=principal.may_see_contacts(user.username)
                ),
            }
            for user, registration in await self.app.directory()
        ]
        write_json(request, 200, listing)

    async def me(self, request: Request) -> None:
        """The authenticated user (and, for a browser session, its CSRF token)."""
        principal = await self._principal(request)
        registration = await self.app.registration(principal.username)
        value: dict[str, object] = {
            "display_name": principal.user.display_name,
            "is_admin": principal.is_admin,
            **registration_json(registration, self.app.clock.seconds(), contacts=True),
        }
        if principal.session is not None:
            value["csrf_token"] = principal.session.csrf_token
        write_json(request, 200, value)

    async def list_calls(self, request: Request) -> None:
        """The user's calls, newest first: ``?limit=`` (1-100) and ``?offset=``; with
        ``?active=true``, the calls in progress (mine, or all for an admin; every node's with the
        cluster bus)."""
        principal = await self._principal(request)
        active = (request.args or {}).get(b"active", [b"false"])[0]
        if active not in (b"true", b"false"):
            raise HTTPError(400, "active must be true or false")
        if active == b"true":
            views = self.app.calls_in_progress(principal)
            write_json(request, 200, {"calls": [call_json(view) for view in views], "next": None})
            return
        limit = _int_arg(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        offset = _int_arg(request, "offset", 0, 0, 1_000_000)
        views, more = await self.app.history(principal.username, limit, offset)
        write_json(
            request,
            200,
            {
                "calls": [call_json(view) for view in views],
                "next": (
                    f"{API_PREFIX}/calls?limit={limit}&offset={offset + limit}" if more else None
                ),
            },
        )

    async def place_call(self, request: Request) -> None:
        """
        ``{"callee": "bob"}``: ring my phone, then the callee's; ``{"number": "..."}``: a
        number (or ``tel:``/``sip:`` URI, or user name) through the dial plan
        (docs/dialplan.md): 403 with the reason when the plan refuses it. An administrator's
        ``{"calls": [{"caller": "alice", "callee": "bob"}, ...]}`` places a batch for any
        users: 200 and ``{"calls": [...]}``, one result per call in order, each
        ``{"status": 201, "call": {...}}`` or ``{"status": 4xx, "error": "..."}``.
        """
        principal = await self._principal(request)
        body = read_json(request)
        if "calls" in body:
            await self._place_batch(request, principal, body)
            return
        unknown = set(body) - {"callee", "caller", "number"}
        if unknown:
            raise HTTPError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        if "caller" in body and body["caller"] != principal.username:
            raise HTTPError(403, "calls can only be placed from your own phone")
        if "number" in body:
            if "callee" in body:
                raise HTTPError(400, "give callee or number, not both")
            number = body["number"]
            if not isinstance(number, str):
                raise HTTPError(400, "number must be a string")
            view = await self.app.dial(principal, number)
        else:
            callee = body.get("callee")
            if not isinstance(callee, str):
                raise HTTPError(400, "callee (a user name) or number is required")
            view = await self.app.place_call(principal, callee)
        request.setHeader(b"location", f"{API_PREFIX}/calls/{view.call_id}".encode())
        write_json(request, 201, call_json(view))

    async def _place_batch(
        self, request: Request, principal: Principal, body: dict[str, object]
    ) -> None:
        unknown = set(body) - {"calls"}
        if unknown:
            raise HTTPError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        results = await self.app.place_calls(principal, _batch(body["calls"]))
        write_json(
            request,
            200,
            {
                "calls": [
                    {"status": 201, "call": call_json(result)}
                    if isinstance(result, CallInfo)
                    else {"status": result.status, "error": result.message}
                    for result in results
                ]
            },
        )

    async def get_call(self, request: Request, call_id: str) -> None:
        """One call (mine, or any for an admin)."""
        principal = await self._principal(request)
        view = await self.app.find_call(principal, call_id)
        write_json(request, 200, call_json(view))

    async def hang_up(self, request: Request, call_id: str) -> None:
        """Cancel a ringing call or hang up a connected one."""
        principal = await self._principal(request)
        view = await self.app.hang_up(principal, call_id)
        write_json(request, 200, call_json(view))

    async def get_trace(self, request: Request, call_id: str) -> bytes | None:
        """
        The call's SIP messages (mine, or any for an admin): JSON, or with ``?format=text``
        text in the ``sipp -trace_msg`` style.
        """
        principal = await self._principal(request)
        form = (request.args or {}).get(b"format", [b"json"])[0]
        if form not in (b"json", b"text"):
            raise HTTPError(400, "format must be json or text")
        view, trace = await self.app.call_trace(principal, call_id)
        if form == b"text":
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return trace_text(view.call_id, trace).encode("utf-8")
        write_json(
            request,
            200,
            trace_json(
                view.call_id,
                trace,
                caller=view.caller,
                callee=view.callee,
                reason=self.app.failure_words(view, principal),
            ),
        )
        return None

    async def get_trace_pcap(self, request: Request, call_id: str) -> bytes:
        """The call's SIP messages as a pcap file (administrators only)."""
        principal = await self._principal(request)
        view, trace = await self.app.call_trace(principal, call_id)
        if not principal.is_admin:
            raise HTTPError(403, "only administrators may download a call's pcap")
        request.setHeader(b"content-type", b"application/vnd.tcpdump.pcap")
        request.setHeader(
            b"content-disposition",
            f'attachment; filename="call-{view.call_id}.pcap"'.encode("ascii"),
        )
        return trace_pcap(trace)

    async def events(self, request: Request) -> None:
        """Server-sent events: ``call`` (my calls) and ``registration`` (everyone's presence;
        contact URIs as in ``/users``); with ``?trace=ID`` (a call I may see) also that
        call's ``call`` events and each new message of its trace (``trace``)."""
        principal = await self._principal(request)
        raw = (request.args or {}).get(b"trace")
        trace_call = None
        if raw:
            view = await self.app.find_call(principal, raw[0].decode("ascii", "replace"))
            trace_call = view.call_id
        self.app.open_stream(principal, request, trace_call)
