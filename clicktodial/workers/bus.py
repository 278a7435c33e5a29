"""
The local bus between the main process and its workers (``[daemon] workers``): AMP over each
worker's standard input and output pipes, no PostgreSQL (SQLite keeps working).

It is the cluster's event bus (:class:`~clicktodial.interfaces.IEventBus`) over pipes, so
that :class:`~clicktodial.cluster.calls.ClusterCalls` does here what it does between nodes:
each worker is a node; every call event a worker publishes reaches the main process (whose
web shows it) and the other workers; a hang-up is published with the owner's node id and
executed by the owner. The main process is the hub: a message from one worker is delivered
to its own subscribers and forwarded to every other worker, never back to its sender; call
events (:data:`~clicktodial.cluster.calls.CALLS_CHANNEL`) are the exception: they stop at
the main process, whose web shows every call. A worker serves no page and acts on no other
worker's call (hang-ups come to the owner on the control channel), so forwarding them would
only have each worker decode every other worker's call events.

Three more commands: a worker tells the main process it is ``Ready`` (serving: it counts for
systemd's ``READY=1`` and ``/readyz``), the main process asks a worker to ``PlaceCall``
(:class:`WorkerPlacement`: round robin over the ready workers; the phones' registrations are
in the shared store, so any worker can ring both), and for ``ScrapeMetrics`` when its
``/metrics`` is scraped (:mod:`clicktodial.workers.metrics`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.calls.values import CallInfo, CallRefused
from clicktodial.cluster.bus import (
    CONNECTED,
    Subscribers,
    check_channel,
    decode_message,
    encode_message,
)
from clicktodial.cluster.calls import CALLS_CHANNEL, info_from_message
from clicktodial.interfaces import ICallController, ICallEventListener, IEventBus

__all__ = [
    "MAIN_NODE",
    "MAIN_ONLY_CHANNELS",
    "NotConnected",
    "PlaceCall",
    "Publish",
    "ScrapeMetrics",
    "Ready",
    "WorkerBus",
    "WorkerConnection",
    "WorkerHub",
    "WorkerPlacement",
]

log = Logger(namespace="clicktodial.workers.bus")

#: The main process's node id on the local bus.
MAIN_NODE = "main"

#: A worker's messages on these channels reach the main process only (see the module).
MAIN_ONLY_CHANNELS = frozenset({CALLS_CHANNEL})


class Publish(amp.Command):
    """A bus message (the JSON of :func:`~clicktodial.cluster.bus.encode_message`)."""

    arguments = [(b"channel", amp.Unicode()), (b"message", amp.Unicode())]
    requiresAnswer = False


class Ready(amp.Command):
    """The worker serves (its store, SIP stack and calls started)."""

    requiresAnswer = False


class PlaceCall(amp.Command):
    """
    Place a click-to-dial call on the worker; ``call`` is the new call's
    :class:`CallInfo` as JSON, or empty when refused (``reason`` and ``message`` then say why,
    as :class:`CallRefused` does).
    """

    arguments = [(b"caller", amp.Unicode()), (b"callee", amp.Unicode())]
    response = [(b"call", amp.Unicode()), (b"reason", amp.Unicode()), (b"message", amp.Unicode())]


class ScrapeMetrics(amp.Command):
    """
    The worker's metric families now (:func:`clicktodial.workers.metrics.encode_families`:
    compressed, a few KB; AMP's limit for one value is 64 KB).
    """

    response = [(b"families", amp.String())]


class NotConnected(Exception):
    """The worker asked is not connected to the main process (dead, restarting)."""


def _delivered(
    subscribers: Subscribers, clock: IReactorTime, channel: str, text: str, sender: str
) -> None:
    """Deliver a message received from ``sender`` on the next reactor turn (never re-entrant)."""
    message = decode_message(text)
    if message is None:
        log.warn(
            "local bus: dropped a malformed message on {channel} from {peer}",
            channel=channel,
            peer=sender,
        )
        return
    try:
        check_channel(channel)
    except ValueError:
        log.warn("local bus: dropped a message on a bad channel from {peer}", peer=sender)
        return
    clock.callLater(0, subscribers.deliver, channel, message)


# --- the main process ----------------------------------------------------------------------


class WorkerConnection(amp.AMP):
    """The main process's end of one worker's pipes."""

    def __init__(self, hub: WorkerHub, index: int) -> None:
        super().__init__()
        self.hub = hub
        self.index = index
        #: the worker said Ready (and the connection is open)
        self.ready = False

    @Publish.responder
    def _publish(self, channel: str, message: str) -> dict[str, object]:
        self.hub.received(self, channel, message)
        return {}

    @Ready.responder
    def _ready(self) -> dict[str, object]:
        self.ready = True
        self.hub.worker_ready(self)
        return {}

    def scrape(self) -> Deferred[bytes]:
        """The worker's encoded metric families."""
        asked: Deferred[dict[str, bytes]] = self.callRemote(ScrapeMetrics)
        # A Deferred of our own (see WorkerPlacement.place_call).
        answered: Deferred[bytes] = Deferred()
        asked.addCallbacks(lambda answer: answered.callback(answer["families"]), answered.errback)
        return answered

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.ready = False
        self.hub.detach(self)
        super().connectionLost(reason)


@implementer(IEventBus)
class WorkerHub(Service):
    """
    The main process's :class:`IEventBus` and the hub of the workers' messages (see the
    module). Messages are delivered to local subscribers on the next reactor turn.

    :ivar connections: worker index -> its open connection.
    """

    def __init__(self, clock: IReactorTime, node_id: str = MAIN_NODE) -> None:
        self.clock = clock
        self.node_id = node_id
        self.connections: dict[int, WorkerConnection] = {}
        self._subscribers = Subscribers()
        #: called with the worker index each time a worker says Ready
        self.on_ready: list[Callable[[int], object]] = []

    def startService(self) -> None:
        super().startService()
        self.clock.callLater(0, self._subscribers.deliver, CONNECTED, {"node": self.node_id})

    def attach(self, index: int) -> WorkerConnection:
        """The protocol of worker ``index``'s new pipes (replacing a dead one's)."""
        connection = WorkerConnection(self, index)
        self.connections[index] = connection
        return connection

    def detach(self, connection: WorkerConnection) -> None:
        if self.connections.get(connection.index) is connection:
            del self.connections[connection.index]

    def worker_ready(self, connection: WorkerConnection) -> None:
        log.info("worker {index} is ready", index=connection.index)
        for callback in list(self.on_ready):
            callback(connection.index)

    def ready_workers(self) -> list[WorkerConnection]:
        """The workers serving now, by index."""
        return [c for _, c in sorted(self.connections.items()) if c.ready]

    def ready_indexes(self) -> list[int]:
        """The indexes of the workers serving now."""
        return [c.index for c in self.ready_workers()]

    def scrape(self, index: int) -> Deferred[bytes]:
        """
        Worker ``index``'s encoded metric families; fails with :class:`NotConnected` when
        it is not connected, or with AMP's error when it cannot answer.
        """
        connection = self.connections.get(index)
        if connection is None:
            return fail(NotConnected(f"worker {index} is not connected"))
        return connection.scrape()

    def publish(self, channel: str, payload: Mapping[str, object]) -> Deferred[bool]:
        """See :meth:`IEventBus.publish`: to our subscribers and every worker."""
        text = encode_message(self.node_id, payload)
        check_channel(channel)
        if not self.running:
            return succeed(False)
        _delivered(self._subscribers, self.clock, channel, text, self.node_id)
        self._forward(channel, text, None)
        return succeed(True)

    def subscribe(
        self, channel: str, callback: Callable[[dict[str, object]], None]
    ) -> Callable[[], None]:
        """See :meth:`IEventBus.subscribe`."""
        return self._subscribers.add(channel, callback)

    def received(self, sender: WorkerConnection, channel: str, text: str) -> None:
        """A worker's message: to our subscribers and the other workers."""
        if not self.running:
            return
        _delivered(self._subscribers, self.clock, channel, text, f"worker {sender.index}")
        self._forward(channel, text, sender)

    def _forward(self, channel: str, text: str, sender: WorkerConnection | None) -> None:
        if sender is not None and channel in MAIN_ONLY_CHANNELS:
            return
        for connection in list(self.connections.values()):
            if connection is not sender:
                connection.callRemote(Publish, channel=channel, message=text)


@implementer(ICallController)
class WorkerPlacement:
    """
    The main process's "local" call controller: it runs no call itself, it has each new
    call placed by a worker (round robin over the ready workers). Wrapped by
    :class:`~clicktodial.cluster.calls.ClusterCalls`, which knows every worker's calls
    from the bus and sends hang-ups to their owners.
    """

    def __init__(self, hub: WorkerHub) -> None:
        self.hub = hub
        self._turn = itertools.count()

    def place_call(self, caller_username: str, callee_username: str) -> Deferred[CallInfo]:
        workers = self.hub.ready_workers()
        if not workers:
            return fail(CallRefused("unavailable", "no worker process is ready; try again"))
        worker = workers[next(self._turn) % len(workers)]
        answered: Deferred[dict[str, str]] = worker.callRemote(
            PlaceCall, caller=caller_username, callee=callee_username
        )
        # A Deferred of our own: AMP ends the chain of its own with an errback that drops
        # the connection, so a refusal must not fail that chain.
        placed: Deferred[CallInfo] = Deferred()
        answered.addCallbacks(lambda answer: _settle(placed, answer), placed.errback)
        return placed

    def hang_up(self, call_id: str, by_username: str | None = None) -> bool:
        return False  # no call runs here; ClusterCalls forwards to the owner

    def get_call(self, call_id: str) -> CallInfo | None:
        return None

    def active_calls(self) -> list[CallInfo]:
        return []

    def subscribe(self, listener: ICallEventListener) -> Callable[[], None]:
        return lambda: None  # the events come from the bus


def _settle(placed: Deferred[CallInfo], answer: Mapping[str, str]) -> None:
    info = info_from_message(json.loads(answer["call"])) if answer["call"] else None
    if info is not None:
        placed.callback(info)
    elif answer["call"]:
        placed.errback(CallRefused("unavailable", "the worker's answer was malformed"))
    else:
        placed.errback(CallRefused(answer["reason"], answer["message"]))


# --- a worker ------------------------------------------------------------------------------


class _MainConnection(amp.AMP):
    """A worker's end of its pipes to the main process."""

    def __init__(self, bus: WorkerBus) -> None:
        super().__init__()
        self.bus = bus

    @Publish.responder
    def _publish(self, channel: str, message: str) -> dict[str, object]:
        self.bus.received(channel, message)
        return {}

    @PlaceCall.responder
    def _place_call(self, caller: str, callee: str) -> Deferred[dict[str, str]]:
        return self.bus.place_call(caller, callee)

    @ScrapeMetrics.responder
    def _scrape_metrics(self) -> dict[str, bytes]:
        return {"families": self.bus.metric_families()}

    def connectionMade(self) -> None:
        super().connectionMade()
        self.bus.connected(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        self.bus.disconnected()


@implementer(IEventBus)
class WorkerBus(Service):
    """
    A worker's :class:`IEventBus`: its messages go to the main process (which forwards them
    to the other workers) and to its own subscribers; the main process's ``PlaceCall``
    goes to the controller given with :meth:`serve_calls`.

    :param connect: makes the connection to the main process with the protocol it is
        given (``twisted.internet.stdio.StandardIO`` in a worker; a test's loopback).
    :param lost: called when the main process is gone (a worker then stops).
    """

    def __init__(
        self,
        clock: IReactorTime,
        node_id: str,
        connect: Callable[[amp.AMP], object],
        lost: Callable[[], object] = lambda: None,
    ) -> None:
        self.clock = clock
        self.node_id = node_id
        self._connect = connect
        self._lost = lost
        self._subscribers = Subscribers()
        self._main: _MainConnection | None = None
        self._controller: ICallController | None = None
        self._metrics: Callable[[], bytes] = lambda: b""

    def serve_metrics(self, families: Callable[[], bytes]) -> None:
        """Answer the main process's :class:`ScrapeMetrics` with ``families()``."""
        self._metrics = families

    def metric_families(self) -> bytes:
        """This worker's encoded metric families (see :meth:`serve_metrics`)."""
        return self._metrics()

    def serve_calls(self, controller: ICallController) -> None:
        """Place the main process's calls with ``controller`` (once, when built)."""
        if self._controller is not None:
            raise RuntimeError("the worker bus already serves a call controller")
        self._controller = controller

    def startService(self) -> None:
        super().startService()
        self._connect(_MainConnection(self))

    def connected(self, main: _MainConnection) -> None:
        self._main = main
        self.clock.callLater(0, self._subscribers.deliver, CONNECTED, {"node": self.node_id})

    def disconnected(self) -> None:
        self._main = None
        if self.running:
            log.error("worker {node}: the main process is gone; stopping", node=self.node_id)
            self._lost()

    def ready(self) -> None:
        """Tell the main process this worker serves."""
        if self._main is not None:
            self._main.callRemote(Ready)

    def publish(self, channel: str, payload: Mapping[str, object]) -> Deferred[bool]:
        """See :meth:`IEventBus.publish`."""
        text = encode_message(self.node_id, payload)
        check_channel(channel)
        if not self.running or self._main is None:
            return succeed(False)
        _delivered(self._subscribers, self.clock, channel, text, self.node_id)
        self._main.callRemote(Publish, channel=channel, message=text)
        return succeed(True)

    def subscribe(
        self, channel: str, callback: Callable[[dict[str, object]], None]
    ) -> Callable[[], None]:
        """See :meth:`IEventBus.subscribe`."""
        return self._subscribers.add(channel, callback)

    def received(self, channel: str, text: str) -> None:
        if self.running:
            _delivered(self._subscribers, self.clock, channel, text, MAIN_NODE)

    def place_call(self, caller: str, callee: str) -> Deferred[dict[str, str]]:
        controller = self._controller
        if controller is None:
            return succeed(
                {"call": "", "reason": "unavailable", "message": "this worker places no calls"}
            )

        def answer(info: CallInfo) -> dict[str, str]:
            return {"call": json.dumps(attrs.asdict(info)), "reason": "", "message": ""}

        def refused(failure: Failure) -> dict[str, str]:
            failure.trap(CallRefused)
            error = failure.value
            assert isinstance(error, CallRefused)
            return {"call": "", "reason": error.reason, "message": error.message}

        placed = maybeDeferred(controller.place_call, caller, callee)
        return placed.addCallbacks(answer, refused)
