"""
The web resource tree: :func:`make_root_resource` builds the root that :mod:`clicktodial.service`
serves.

``/healthz`` (probes), ``/static/`` (the CSS and script, from the package), ``/api/v1`` (the
JSON API, :mod:`clicktodial.web.api`) and every other path to the HTML pages
(:mod:`clicktodial.web.pages`). Without a :class:`WebApp` (the daemon's parts not wired yet)
only ``/`` and ``/healthz`` exist.
"""

from __future__ import annotations

from importlib.resources import files

from twisted.web.iweb import IRequest
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from twisted.web.template import Element, Tag, XMLString, renderElement, renderer

from clicktodial import __version__
from clicktodial.web.api import ApiResource
from clicktodial.web.app import WebApp
from clicktodial.web.http import security_headers
from clicktodial.web.pages import PagesResource

__all__ = [
    "HealthResource",
    "HomePage",
    "RootResource",
    "StaticFiles",
    "WebRoot",
    "make_root_resource",
]


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


class WebRoot(Resource):
    """
    The root with a :class:`WebApp`: API, static files and health by name; every other path
    is a page (the pages resource routes on the whole path).
    """

    def __init__(self, app: WebApp) -> None:
        super().__init__()
        self.app = app
        self.pages = PagesResource(app)
        api = Resource()
        api.putChild(b"v1", ApiResource(app))
        self.putChild(b"api", api)
        self.putChild(b"healthz", HealthResource())
        self.putChild(b"static", StaticFiles())

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        return self.pages

    def render(self, request: Request) -> object:
        return self.pages.render(request)


def make_root_resource(app: WebApp | None = None) -> Resource:
    """
    The root of the web tree. With ``app``: the whole web interface; without: only ``/`` and
    ``/healthz`` (anything else is 404).
    """
    if app is not None:
        return WebRoot(app)
    root = RootResource()
    # A request for "/" asks the root for its child b"" (twisted.web.resource.getChildForRequest).
    root.putChild(b"", HomePage())
    root.putChild(b"healthz", HealthResource())
    return root
