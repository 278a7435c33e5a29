"""
The web resource tree: :func:`make_root_resource` builds the root that :mod:`clicktodial.service`
serves.

``/healthz`` (probes), ``/static/`` (the CSS and script, from the package), ``/api/v1`` (the
JSON API, :mod:`clicktodial.web.api`), ``/metrics`` and ``/readyz`` for operators only
(:class:`OperatorOnly`) and every other path to the HTML pages
(:mod:`clicktodial.web.pages`). Without a :class:`WebApp` (the daemon's parts not wired yet)
only ``/`` and ``/healthz`` exist.

:func:`make_operator_root` is the tree of ``/metrics``, ``/readyz`` (put there by
:func:`clicktodial.operations.install_operations`) and ``/healthz``: served to anyone on
``[web] metrics_listen``, and through :class:`OperatorOnly` on ``[web] listen``.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from importlib.resources import files

from twisted.web.iweb import IRequest
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.template import Element, Tag, XMLString, renderElement, renderer

from clicktodial import __version__
from clicktodial.web.api import ApiResource
from clicktodial.web.app import WebApp
from clicktodial.web.http import HTTPError, Route, RoutedResource, security_headers
from clicktodial.web.pages import PagesResource

__all__ = [
    "OPERATOR_PATHS",
    "HealthResource",
    "HomePage",
    "OperatorOnly",
    "RootResource",
    "StaticFiles",
    "WebRoot",
    "make_operator_root",
    "make_root_resource",
]

#: What the operator tree holds besides ``/healthz``: guarded on the main listener.
OPERATOR_PATHS = (b"metrics", b"readyz")


class _HomeElement(Element):
    loader = XMLString(
        b"""<html xmlns:t="http://twistedmatrix.com/ns/twisted.web.template/0.1" lang="en">
<head><meta charset="utf-8"/><title>clicktodial</title></head>
<body><h1>clicktodial</h1><p>Click-to-dial telephony, version <t:transparent
t:render="version"/>.</p></body>
</html>"""
    )

    @renderer
    def version(self, request: IRequest | None, tag: Tag) -> Tag:
        return tag(__version__)


class HomePage(Resource):
    """``/`` without a :class:`WebApp`: an HTML page naming the service."""

    isLeaf = True

    def render_GET(self, request: Request) -> object:
        security_headers(request, private=False)
        return renderElement(request, _HomeElement())


class HealthResource(Resource):
    """``/healthz``: ``200 ok`` (text/plain) while the daemon serves requests; for probes."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return b"ok"


class RootResource(Resource):
    """The root of the web tree; a path it has no child for is a 404 page."""

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        return notFound()


class StaticFiles(Resource):
    """
    ``/static/NAME``: the package's CSS and script (read once), cacheable, with the security
    headers; anything else is 404.
    """

    isLeaf = True
    TYPES = {".css": b"text/css; charset=utf-8", ".js": b"text/javascript; charset=utf-8"}

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[bytes, tuple[bytes, bytes]] = {}
        for entry in files("clicktodial.web").joinpath("static").iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            if suffix in self.TYPES:
                self.files[entry.name.encode()] = (self.TYPES[suffix], entry.read_bytes())

    def render_GET(self, request: Request) -> bytes:
        security_headers(request, private=False)
        name = b"/".join(request.postpath or [])
        if name not in self.files:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found"
        content_type, body = self.files[name]
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"cache-control", b"public, max-age=3600")
        return body


class OperatorOnly(RoutedResource):
    """
    ``/metrics`` and ``/readyz`` on the main listener (``[web] listen``): answered only to
    ``Authorization: Bearer <[web] metrics_token>`` or an administrator (session or API
    token). No credentials: 401 with a Bearer challenge; a user who is not an
    administrator: 403. Everything else about them is the operator tree's resource.

    :param operator: the tree holding the resources by name (:func:`make_operator_root`).
    """

    def __init__(self, app: WebApp, operator: Resource) -> None:
        super().__init__(app.limits.max_body)
        self.app = app
        self.operator = operator
        token = app.limits.metrics_token
        self.token = token.encode("ascii") if token is not None else None

    def routes(self) -> Sequence[Route]:
        return (Route("GET", "/", self.answer),)

    def error(self, request: Request, error: HTTPError) -> None:
        request.setResponseCode(error.status)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.write(error.message.encode("utf-8") + b"\n")
        request.finish()

    async def check_access(self, request: Request) -> None:
        """:raises HTTPError: 401 without (valid) credentials, 403 for a non-administrator."""
        authorization = request.getHeader(b"authorization") or b""
        scheme, _, token = authorization.partition(b" ")
        if (
            self.token is not None
            and scheme.lower() == b"bearer"
            and hmac.compare_digest(token.strip(), self.token)
        ):
            return
        principal = await self.app.authenticate(request)
        if principal is None:
            raise HTTPError(
                401, "authentication required", {b"www-authenticate": b'Bearer realm="clicktodial"'}
            )
        if not principal.is_admin:
            raise HTTPError(403, "for administrators only")

    async def answer(self, request: Request) -> bytes | None:
        await self.check_access(request)
        target = self.operator.getStaticEntity((request.prepath or [b""])[-1])
        if target is None:
            raise HTTPError(404, "not found")
        result = target.render(request)
        return None if result is NOT_DONE_YET else result


class WebRoot(Resource):
    """
    The root with a :class:`WebApp`: API, static files and health by name, ``/metrics`` and
    ``/readyz`` of ``operator`` for operators only; every other path is a page (the pages
    resource routes on the whole path). Every answer to a request that came over TLS
    carries ``Strict-Transport-Security`` (``[web] hsts_max_age``).
    """

    def __init__(self, app: WebApp, operator: Resource | None = None) -> None:
        super().__init__()
        self.app = app
        self.pages = PagesResource(app)
        api = Resource()
        api.putChild(b"v1", ApiResource(app))
        self.putChild(b"api", api)
        self.putChild(b"healthz", HealthResource())
        self.putChild(b"static", StaticFiles())
        if operator is not None:
            guarded = OperatorOnly(app, operator)
            for name in OPERATOR_PATHS:
                self.putChild(name, guarded)

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        # Every request passes here first (twisted.web.resource.getChildForRequest): one
        # place for the header, whichever resource answers. RFC 6797 §7.1.
        self.app.origin.transport_security(request)
        return super().getChildWithDefault(path, request)

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        return self.pages

    def render(self, request: Request) -> object:
        return self.pages.render(request)


def make_operator_root() -> Resource:
    """
    The operator tree: ``/healthz`` now; :func:`~clicktodial.operations.install_operations`
    adds ``/metrics`` and ``/readyz``. Anything else is 404.
    """
    root = RootResource()
    root.putChild(b"healthz", HealthResource())
    return root


def make_root_resource(app: WebApp | None = None, operator: Resource | None = None) -> Resource:
    """
    The root of the web tree. With ``app``: the whole web interface, and ``/metrics`` and
    ``/readyz`` of the ``operator`` tree (:func:`make_operator_root`) for operators; without:
    only ``/`` and ``/healthz`` (anything else is 404).
    """
    if app is not None:
        return WebRoot(app, operator)
    root = RootResource()
    # A request for "/" asks the root for its child b"" (twisted.web.resource.getChildForRequest).
    root.putChild(b"", HomePage())
    root.putChild(b"healthz", HealthResource())
    return root
