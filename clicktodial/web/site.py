"""
The web listener's :class:`~twisted.web.server.Site`, bounded against slow clients.

Twisted's ``HTTPChannel`` times a connection out after ``Site.timeOut`` seconds of silence
(12 hours by default), and every byte received restarts that timer: a client sending its
request a byte at a time (slow-loris) holds the connection for as long as it likes. Here a
request must arrive whole (request line, headers and body) within ``[web] request_timeout``
seconds, counted from the connection's start or from the previous response on it (so an idle
keep-alive connection is closed after that time too). A response being streamed (an event
stream) is not limited: the request arrived. With ``[web] max_connections_per_client``
(:mod:`clicktodial.connlimit`) this bounds what one address holds.

The channel is Twisted's HTTP/1.1 ``HTTPChannel`` itself (``Site`` would negotiate HTTP/2
when the ``h2`` package is installed; the daemon does not install it).
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Site

__all__ = ["BoundedSite"]


class _DeadlineChannel(HTTPChannel):
    """An ``HTTPChannel`` whose requests must arrive within ``request_timeout`` seconds."""

    request_timeout = 30.0
    _deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def allContentReceived(self) -> None:
        self._disarm()
        super().allContentReceived()

    def requestDone(self, request: object) -> None:
        # Armed before the base class reads what is buffered: a pipelined request complete
        # in it disarms it again.
        if self.persistent:
            self._arm()
        super().requestDone(request)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        super().connectionLost(reason)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.callLater(self.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        # HTTPChannel's own idle time-out: close, then abort if the close does not complete.
        self.timeoutConnection()


class BoundedSite(Site):
    """A ``Site`` whose connections must deliver each request within ``request_timeout``."""

    def __init__(self, resource: IResource, clock: IReactorTime, request_timeout: float) -> None:
        super().__init__(resource, reactor=clock)
        self.request_timeout = request_timeout

    def buildProtocol(self, addr: object) -> HTTPChannel | None:  # type: ignore[override]
        channel = super().buildProtocol(addr)
        if isinstance(channel, _DeadlineChannel):
            channel.request_timeout = self.request_timeout
        return channel

    protocol = _DeadlineChannel  # type: ignore[assignment]
