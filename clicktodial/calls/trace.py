"""
Call traces: the SIP messages of each call's legs, captured at the transport tap
(:class:`~clicktodial.interfaces.ISIPTap`), buffered in memory and written to the
:class:`~clicktodial.interfaces.ICallTraceStore` in one go for all the calls that are due
(a call once it is over, a long call every ``max_age`` seconds; never one write per
message); docs/calls.md, "Call traces".

A call tells the tracer the Call-ID of each leg's INVITE before it is sent
(:meth:`CallTracer.watch`); every message with a watched Call-ID is kept: direction, local
and remote address, transport, time in ms, whether the same octets already passed that way
(a retransmission), and the octets with ``Authorization``/``Proxy-Authorization`` values
redacted. When the call is over its Call-IDs stay watched for ``linger`` seconds (64*T1: the
last BYE's response, ACK and 2xx retransmissions), then are forgotten.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.config import Config
from clicktodial.interfaces import ICallTraceStore
from clicktodial.sip.interfaces import ISIPTap
from clicktodial.sip.message import Request, Response
from clicktodial.store.traces import CallTrace, TraceAppend, TracedMessage, TraceLimits
from clicktodial.timers import Lingering, LingerQueue

__all__ = [
    "CallTraceService",
    "CallTracer",
    "TraceListener",
    "TraceUnavailable",
    "build_tracer",
    "redact",
]

log = Logger(namespace="clicktodial.calls.trace")

#: What a live listener gets: the call's id and its new message.
TraceListener = Callable[[str, TracedMessage], None]

# A header line of Authorization or Proxy-Authorization (RFC 3261 §20.7, §20.28), with its
# continuation lines; the field name is kept, the value replaced.
_CREDENTIALS = re.compile(
    rb"^((?:proxy-)?authorization[ \t]*:)[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*",
    re.IGNORECASE | re.MULTILINE,
)
_REDACTED = rb"\1 <redacted>"


def redact(data: bytes) -> bytes:
    """``data`` with the values of its Authorization and Proxy-Authorization headers
    replaced by ``<redacted>`` (only in the header section: a body is left alone)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = len(data)
    if data.find(b"uthorization", 0, end) < 0 and data.find(b"UTHORIZATION", 0, end) < 0:
        return data  # the usual case: nothing copied
    return _CREDENTIALS.sub(_REDACTED, data[:end]) + data[end:]


class _Buffer:
    """One call's messages not yet written, and its running totals for the bounds."""

    __slots__ = (
        "call_id",
        "count",
        "dropped",
        "ended_at",
        "forgotten",
        "full",
        "last_ms",
        "pending",
        "seen",
        "sip_call_ids",
        "size",
    )

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.pending: list[TracedMessage] = []
        #: the hash of the octets of every message kept, with its direction in the low bit
        #: (plain ints: a held call keeps this set): retransmissions.
        self.seen: set[int] | None = None
        #: the Call-IDs of its legs (and forks) being watched
        self.sip_call_ids: list[str] = []
        #: no longer watched: written at the next flush, then gone
        self.forgotten = False
        self.count = 0
        self.size = 0
        #: a bound was hit: every later message is dropped
        self.full = False
        self.dropped = 0  # dropped and not yet written
        self.ended_at: float | None = None
        self.last_ms = 0  # when the last message was kept


@implementer(ISIPTap)
class CallTracer:
    """
    Keeps the SIP messages of calls (see the module docstring).

    :param store: where traces are written.
    :param limits: the per-call bounds (``[calls] trace_max_messages``, ``trace_max_kb``);
        messages past them are counted as dropped, not buffered.
    :param linger: seconds a call's Call-IDs stay watched after the call is over.
    :param flush_interval: seconds between checks for what is due to be written: a call's
        messages ``settle`` seconds after it is over (its BYE's answer has come), messages
        buffered for ``max_age`` seconds (a long call), and the rest of a call when its
        Call-IDs are forgotten; so a short call is written once.
    :param retention: seconds a trace is kept (``[calls] trace_days``); purged every
        ``purge_interval`` seconds.
    """

    def __init__(
        self,
        clock: IReactorTime,
        store: ICallTraceStore,
        limits: TraceLimits,
        *,
        linger: float = 32.0,
        flush_interval: float = 1.0,
        settle: float = 2.0,
        max_age: float = 5.0,
        retention: float = 7 * 86400.0,
        purge_interval: float = 3600.0,
    ) -> None:
        self.clock = clock
        self.store = store
        self.limits = limits
        self.linger = linger
        self.flush_interval = flush_interval
        self.settle = settle
        self.max_age = max_age
        self.retention = retention
        self.purge_interval = purge_interval
        #: SIP Call-ID -> (its call's buffer, its leg)
        self._by_sip_call_id: dict[str, tuple[_Buffer, str]] = {}
        #: ISIPTap.watching: whether any Call-ID is watched (the transport skips the tap,
        #: its Call-ID look-up and a received message's octets, while none is)
        self.watching = False
        self._by_call: dict[str, _Buffer] = {}
        #: the calls with messages (or drops) not yet written, or forgotten: the only ones
        #: a write looks at (a held call is in none of them)
        self._unwritten: dict[str, _Buffer] = {}
        #: when the retransmission keys of quiet calls were last dropped
        self._quiet_checked = clock.seconds()
        self._listeners: dict[str, list[TraceListener]] = {}
        #: every ended call's linger timer on one reactor timer (they all have one length)
        self._linger_queue = LingerQueue(clock, linger)
        self._lingering: dict[str, Lingering] = {}
        self._flusher = LoopingCall(self._write_due)
        self._flusher.clock = clock
        self._purger = LoopingCall(self.purge)
        self._purger.clock = clock
        self._writing: Deferred[None] | None = None
        self._waiters: list[tuple[Callable[[_Buffer], bool], Deferred[None]]] = []
        #: what the write in progress carries (shown by trace() until it is stored)
        self._in_flight: list[TraceAppend] = []

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Write buffered messages every ``flush_interval``; purge old traces now and every
        ``purge_interval``."""
        self._flusher.start(self.flush_interval, now=False)
        self._purger.start(self.purge_interval, now=True)

    def stop(self) -> Deferred[None]:
        """Stop the timers and write what is buffered (every call counts as over)."""
        for loop in (self._flusher, self._purger):
            if loop.running:
                loop.stop()
        for delayed in self._lingering.values():
            if delayed.active():
                delayed.cancel()
        self._lingering.clear()
        for call_id in list(self._by_call):
            self._forget(call_id)
        return self.flush()

    # -- what the calls tell ------------------------------------------------------------

    def watch(self, call_id: str, sip_call_id: str, leg: str) -> None:
        """Keep the messages with ``sip_call_id`` in call ``call_id``'s trace, as ``leg``'s."""
        buffer = self._by_call.get(call_id)
        if buffer is None:
            buffer = self._by_call[call_id] = _Buffer(call_id)
        buffer.sip_call_ids.append(sip_call_id)
        self._by_sip_call_id[sip_call_id] = (buffer, leg)
        self.watching = True

    def call_over(self, call_id: str) -> None:
        """Call ``call_id`` ended: stop watching its Call-IDs after ``linger`` seconds."""
        buffer = self._by_call.get(call_id)
        if buffer is None or buffer.ended_at is not None:
            return
        buffer.ended_at = self.clock.seconds()
        self._lingering[call_id] = self._linger_queue.call_later(lambda: self._forget(call_id))

    def _forget(self, call_id: str) -> None:
        self._lingering.pop(call_id, None)
        buffer = self._by_call.get(call_id)
        if buffer is None:
            return
        for sip_call_id in buffer.sip_call_ids:
            watched = self._by_sip_call_id.get(sip_call_id)
            if watched is not None and watched[0] is buffer:
                del self._by_sip_call_id[sip_call_id]
        self.watching = bool(self._by_sip_call_id)
        buffer.sip_call_ids = []
        buffer.forgotten = True
        if not buffer.pending and not buffer.dropped:
            del self._by_call[call_id]
            self._unwritten.pop(call_id, None)
        self._listeners.pop(call_id, None)

    @property
    def watched_calls(self) -> int:
        """Calls whose messages are being kept or written (0 when idle)."""
        return len(self._by_call)

    # -- ISIPTap ------------------------------------------------------------------------

    def message_passed(
        self,
        direction: str,
        message: Request | Response,
        data: bytes,
        transport: str,
        local: tuple[str, int],
        remote: tuple[str, int],
    ) -> None:
        sip_call_id = message.headers.get("Call-ID")
        if sip_call_id is None:
            return
        watched = self._by_sip_call_id.get(sip_call_id)
        if watched is None:
            return
        buffer, leg = watched
        self._unwritten[buffer.call_id] = buffer
        if buffer.full:
            buffer.dropped += 1
            return
        data = redact(data)
        if (
            buffer.count >= self.limits.max_messages
            or buffer.size + len(data) > self.limits.max_bytes
        ):
            buffer.full = True
            buffer.dropped += 1
            return
        buffer.count += 1
        buffer.size += len(data)
        key = hash(data) * 2 + (direction == "out")
        seen = buffer.seen
        if seen is None:
            seen = buffer.seen = set()
        retransmission = key in seen
        if not retransmission:
            seen.add(key)
        at_ms = buffer.last_ms = round(self.clock.seconds() * 1000)
        traced = TracedMessage(
            at_ms,
            direction,
            transport,
            local[0],
            local[1],
            remote[0],
            remote[1],
            leg,
            sip_call_id,
            retransmission,
            data,
        )
        buffer.pending.append(traced)
        listeners = self._listeners.get(buffer.call_id)
        if listeners:
            for listener in list(listeners):
                try:
                    listener(buffer.call_id, traced)
                except Exception:
                    log.failure("trace listener failed", call_id=sip_call_id)

    # -- live listeners ------------------------------------------------------------------

    def listen(self, call_id: str, listener: TraceListener) -> Callable[[], None]:
        """Call ``listener`` with each new message of call ``call_id`` (while it is
        watched); returns the function that stops it."""
        self._listeners.setdefault(call_id, []).append(listener)

        def stop() -> None:
            listeners = self._listeners.get(call_id)
            if listeners is not None and listener in listeners:
                listeners.remove(listener)
                if not listeners:
                    del self._listeners[call_id]

        return stop

    def unwritten(self, call_id: str) -> Sequence[TracedMessage]:
        """Messages of call ``call_id`` buffered or being written (not yet in the store)."""
        writing = tuple(
            m for append in self._in_flight if append.call_id == call_id for m in append.messages
        )
        buffer = self._by_call.get(call_id)
        return writing + (tuple(buffer.pending) if buffer is not None else ())

    def trace(self, call_id: str) -> Deferred[CallTrace | None]:
        """The call's trace: what the store has, and what is still buffered here."""
        pending = self.unwritten(call_id)
        dropped = self._by_call[call_id].dropped if call_id in self._by_call else 0

        def merge(stored: CallTrace | None) -> CallTrace | None:
            if stored is None and not pending and not dropped:
                return None
            messages = stored.messages if stored is not None else ()
            # A flush may have written some of them while we read.
            written = set(messages)
            fresh = tuple(m for m in pending if m not in written)
            return CallTrace(
                call_id, messages + fresh, (stored.dropped if stored is not None else 0) + dropped
            )

        return self.store.get_trace(call_id).addCallback(merge)

    # -- writing -------------------------------------------------------------------------

    def flush(self) -> Deferred[None]:
        """
        Write everything buffered now, for all calls in one store call (one transaction).

        :return: fires once what was buffered when called is written (or failed: logged).
        """
        return self._write(lambda buffer: True)

    def _write_due(self) -> Deferred[None]:
        now = self.clock.seconds()
        oldest = (now - self.max_age) * 1000
        if now - self._quiet_checked >= self.linger:
            self._quiet_checked = now
            quiet = (now - self.linger) * 1000
            for buffer in self._by_call.values():
                if buffer.seen is not None and buffer.last_ms < quiet:
                    # No transaction of these messages is alive (64*T1): none can be
                    # retransmitted any more. A held call keeps nothing of them.
                    buffer.seen = None

        def due(buffer: _Buffer) -> bool:
            if buffer.forgotten:
                return True  # the last of it
            if buffer.ended_at is not None and now - buffer.ended_at >= self.settle:
                return True
            return bool(buffer.pending) and buffer.pending[0].at_ms <= oldest

        return self._write(due)

    def _write(self, due: Callable[[_Buffer], bool]) -> Deferred[None]:
        # While the previous write runs, the next waits for it.
        if self._writing is not None:
            done: Deferred[None] = Deferred()
            self._waiters.append((due, done))
            return done
        appends = []
        for call_id, buffer in list(self._unwritten.items()):
            if (buffer.pending or buffer.dropped) and due(buffer):
                appends.append(TraceAppend(call_id, tuple(buffer.pending), buffer.dropped))
                buffer.pending = []
                buffer.dropped = 0
            if not buffer.pending and not buffer.dropped:
                del self._unwritten[call_id]
                if buffer.forgotten:
                    self._by_call.pop(call_id, None)
        if not appends:
            return succeed(None)
        writing = self._writing = Deferred()
        self._in_flight = appends

        def failed(failure: Failure) -> None:
            log.failure("cannot write {count} call trace(s)", failure, count=len(appends))

        def written(_: object) -> None:
            self._writing = None
            self._in_flight = []
            waiters, self._waiters = self._waiters, []
            if waiters:
                checks = [check for check, _ in waiters]

                def release(_: object) -> None:
                    for _, waiter in waiters:
                        waiter.callback(None)

                self._write(lambda buffer: any(check(buffer) for check in checks)).addBoth(release)
            writing.callback(None)

        self.store.append_traces(appends, self.limits).addErrback(failed).addBoth(written)
        return writing

    def purge(self) -> Deferred[None]:
        """Remove traces older than ``retention``."""
        before = self.clock.seconds() - self.retention

        def purged(count: int) -> None:
            if count:
                log.info(
                    "purged {count} call trace(s) older than {days} days",
                    count=count,
                    days=round(self.retention / 86400, 2),
                )

        d = self.store.purge_traces(before).addCallback(purged)
        d.addErrback(lambda f: log.failure("cannot purge call traces", f))
        return d


class TraceUnavailable(ValueError):
    """``[calls] trace = on`` with a store backend that keeps no traces."""


class CallTraceService(Service):
    """The tracer's lifecycle in the daemon: its timers run while the service does; at stop
    what is buffered is written (before the store stops)."""

    def __init__(self, tracer: CallTracer) -> None:
        self.tracer = tracer

    def startService(self) -> None:
        super().startService()
        self.tracer.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.tracer.stop()


def build_tracer(
    config: Config, clock: IReactorTime, records: object, transaction_timeout: float
) -> CallTracer | None:
    """
    The daemon's tracer for ``[calls] trace``, writing to ``records`` if it provides
    :class:`ICallTraceStore`; None when tracing is off (or ``auto`` and the backend cannot
    keep traces).

    :raises TraceUnavailable: ``trace = on`` and the backend keeps no traces.
    """
    calls = config.calls
    if calls.trace == "off":
        return None
    store = ICallTraceStore(records, None)
    if store is None:
        if calls.trace == "on":
            raise TraceUnavailable(
                f"trace = on, but the [store] backend {config.store.backend!r} keeps no call"
                " traces (it does not provide ICallTraceStore): use trace = auto or off,"
                " or a backend that does (memory, sql)"
            )
        log.info(
            "call traces off: the [store] backend {backend!r} keeps none",
            backend=config.store.backend,
        )
        return None
    return CallTracer(
        clock,
        store,
        TraceLimits(calls.trace_max_messages, calls.trace_max_kb * 1024),
        linger=transaction_timeout,
        retention=calls.trace_days * 86400.0,
    )
