"""
Server-sent events (the WHATWG HTML "EventSource" wire format): :func:`format_event`, and
:class:`EventStream`, one open ``text/event-stream`` response.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.server import Request

from clicktodial.web.http import is_finished

__all__ = ["EventStream", "format_comment", "format_event"]


def format_event(event: str, data: object, event_id: int | None = None) -> bytes:
    """
    One event: ``event:``, optional ``id:``, and ``data`` as JSON on one ``data:`` line
    (JSON never contains a raw newline), ended by a blank line.

    :raises ValueError: ``event`` contains a line break (it would split the field).
    """
    if "\n" in event or "\r" in event:
        raise ValueError("an event name cannot contain a line break")
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def format_comment(text: str) -> bytes:
    """A comment line (ignored by the browser; keeps proxies from closing an idle stream)."""
    return b": " + text.replace("\n", " ").encode("utf-8") + b"\n\n"


class EventStream:
    """
    An open event stream on ``request``: sends a comment every ``keepalive`` seconds, and
    calls ``on_close`` once when the client goes away or :meth:`close` is called.

    :param retry: milliseconds the browser waits before reconnecting (sent first).
    """

    def __init__(
        self,
        clock: IReactorTime,
        request: Request,
        on_close: Callable[[], None],
        keepalive: float,
        retry: int,
    ) -> None:
        self.clock = clock
        self.request = request
        self.keepalive = keepalive
        self._on_close: Callable[[], None] | None = on_close
        self._next_id = 0
        self._timer: IDelayedCall | None = None
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        # Tell a buffering reverse proxy (nginx) to pass events on at once.
        request.setHeader(b"x-accel-buffering", b"no")
        request.notifyFinish().addBoth(lambda _: self._closed())
        request.write(f"retry: {retry}\n\n".encode("ascii"))
        self._schedule()

    @property
    def open(self) -> bool:
        """Whether events can still be sent."""
        return self._on_close is not None

    def send(self, event: str, data: object) -> None:
        """Send one event (numbered from 1 in this stream)."""
        if not self.open or is_finished(self.request):
            return
        self._next_id += 1
        self.request.write(format_event(event, data, self._next_id))

    def close(self) -> None:
        """End the stream (the browser reconnects after ``retry``)."""
        if not self.open:
            return
        if not is_finished(self.request):
            self.request.finish()
        self._closed()

    def _schedule(self) -> None:
        self._timer = self.clock.callLater(self.keepalive, self._ping)

    def _ping(self) -> None:
        if not self.open or is_finished(self.request):
            return
        self.request.write(format_comment("keepalive"))
        self._schedule()

    def _closed(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
