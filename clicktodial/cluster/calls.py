"""
:class:`ClusterCalls`: every node's web pages and API show and control every call,
whichever node runs it.

It wraps the local call controller (it is an :class:`ICallController` itself, and
the web layer uses it in the controller's place):

- the local controller's state changes go to our listeners and out on the
  bus (channel ``calls``);
- state changes of other nodes' calls come in from the bus, are kept in a
  cache of remote calls in progress and go to our listeners;
- ``hang_up`` of a call another node runs is forwarded to that node over the
  bus (channel ``call_control``), which executes it;
- when the bus (re)connects, every node is asked to announce its calls in
  progress again (``sync``): messages may have been missed meanwhile; a cached
  call nobody re-announces within ``sync_grace`` is looked up in the call
  records and, if over, reported ended;
- ``node_lost`` (from the liveness monitor that reaped a dead node) reports
  the dead node's cached calls as ended with reason ``lost``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.calls.events import CallEvents, CallInfo
from clicktodial.calls.values import CallRefused
from clicktodial.cluster.bus import CONNECTED
from clicktodial.cluster.nodes import CONTROL_CHANNEL
from clicktodial.dialplan.plan import DialDecision
from clicktodial.interfaces import (
    ICallController,
    ICallEventListener,
    ICallRecordStore,
    IEventBus,
    IOutboundCalls,
)
from clicktodial.store.values import CallRecord, final_state

__all__ = ["CALLS_CHANNEL", "ClusterCalls", "info_from_message"]

log = Logger(namespace="clicktodial.cluster.calls")

#: The bus channel of call state changes.
CALLS_CHANNEL = "calls"

_INFO_FIELDS = {a.name for a in attrs.fields(CallInfo)}


def info_from_message(fields: object) -> CallInfo | None:
    """The :class:`CallInfo` a bus message carries (unknown fields, from newer nodes, ignored)."""
    if not isinstance(fields, Mapping):
        return None
    try:
        return CallInfo(**{k: v for k, v in fields.items() if k in _INFO_FIELDS})
    except TypeError:
        return None


def _lost(info: CallInfo, at: float) -> CallInfo:
    return attrs.evolve(
        info,
        state=final_state(info.connected_at),
        ended_at=at,
        end_reason="lost",
        who_hung_up="system",
    )


@implementer(ICallController, IOutboundCalls, ICallEventListener)
class ClusterCalls:
    """
    See the module.

    :param local: this node's call controller.
    :param records: where to look up calls nobody re-announced after a
        resynchronisation.
    :param sync_grace: seconds the other nodes have to re-announce their calls.
    """

    def __init__(
        self,
        clock: IReactorTime,
        local: ICallController,
        bus: IEventBus,
        records: ICallRecordStore | None = None,
        *,
        sync_grace: float = 5.0,
    ) -> None:
        self.clock = clock
        self.local = local
        self.bus = bus
        self.records = records
        self.sync_grace = sync_grace
        self.node_id = bus.node_id
        #: Calls in progress on other nodes: call id → (node, latest info).
        self.remote: dict[str, tuple[str, CallInfo]] = {}
        self._events = CallEvents()
        self._unsubscribe: list[Callable[[], None]] = []
        self._unconfirmed: set[str] = set()
        self._sync_timer: IDelayedCall | None = None

    def start(self) -> None:
        """Listen to the local controller and the bus."""
        self._unsubscribe = [
            self.local.subscribe(self),
            self.bus.subscribe(CALLS_CHANNEL, self._call_message),
            self.bus.subscribe(CONTROL_CHANNEL, self._control_message),
            self.bus.subscribe(CONNECTED, self._bus_connected),
        ]

    def stop(self) -> None:
        """Stop listening."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        if self._sync_timer is not None and self._sync_timer.active():
            self._sync_timer.cancel()
        self._sync_timer = None

    # -- ICallController -------------------------------------------------------------

    def place_call(self, caller_username: str, callee_username: str) -> Deferred[CallInfo]:
        """Calls are placed by the node the request reached (its phones are all reachable)."""
        return self.local.place_call(caller_username, callee_username)

    def place_outbound(
        self,
        caller_username: str,
        decision: DialDecision,
        refund_untried: Callable[[], object] | None = None,
    ) -> Deferred[CallInfo]:
        """Calls to numbers too are placed by the node the request reached."""
        outbound = IOutboundCalls(self.local, None)
        if outbound is None:
            return fail(CallRefused("no-outbound", "this daemon cannot call numbers"))
        return outbound.place_outbound(caller_username, decision, refund_untried)

    def hang_up(self, call_id: str, by_username: str | None = None) -> bool:
        """
        Hang up a call here, or ask the node running it to.

        :return: :class:`True` if the call is in progress here or on a node we know of.
        """
        if self.local.get_call(call_id) is not None:
            return self.local.hang_up(call_id, by_username)
        owner = self.remote.get(call_id)
        if owner is None:
            return False
        log.info(
            "forwarding hang-up of call {call_id} to node {owner}", call_id=call_id, owner=owner[0]
        )
        self.bus.publish(
            CONTROL_CHANNEL,
            {"type": "hang_up", "call_id": call_id, "by": by_username, "owner": owner[0]},
        )
        return True

    def get_call(self, call_id: str) -> CallInfo | None:
        """A call in progress here or on another node."""
        info = self.local.get_call(call_id)
        if info is None and call_id in self.remote:
            info = self.remote[call_id][1]
        return info

    def active_calls(self) -> list[CallInfo]:
        """Every call in progress in the cluster, oldest first."""
        calls = self.local.active_calls() + [info for _, info in self.remote.values()]
        return sorted(calls, key=lambda info: (info.created_at, info.call_id))

    def subscribe(self, listener: ICallEventListener) -> Callable[[], None]:
        """Tell ``listener`` about every call's state changes, on any node."""
        return self._events.subscribe(listener)

    # -- local events ------------------------------------------------------------------

    def call_state_changed(self, info: CallInfo) -> None:
        """The local controller's event: to our listeners and to the other nodes."""
        self._events.publish(info)
        self._announce(info)

    def _announce(self, info: CallInfo) -> None:
        try:
            self.bus.publish(CALLS_CHANNEL, {"type": "state", "call": attrs.asdict(info)})
        except ValueError:
            log.failure("cannot publish call {call_id}", call_id=info.call_id)

    # -- bus messages --------------------------------------------------------------------

    def _call_message(self, message: dict[str, object]) -> None:
        node = message["node"]
        if node == self.node_id or message.get("type") != "state":
            return
        info = info_from_message(message.get("call"))
        if info is None:
            log.warn("dropped a malformed call event from node {peer}", peer=node)
            return
        self._unconfirmed.discard(info.call_id)
        if info.active:
            self.remote[info.call_id] = (str(node), info)
        else:
            self.remote.pop(info.call_id, None)
        self._events.publish(info)

    def _control_message(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        if kind == "hang_up" and message.get("owner") == self.node_id:
            call_id, by = message.get("call_id"), message.get("by")
            if isinstance(call_id, str) and (by is None or isinstance(by, str)):
                done = self.local.hang_up(call_id, by)
                log.info(
                    "hang-up of call {call_id} requested by node {peer}: {result}",
                    call_id=call_id,
                    peer=message["node"],
                    result="done" if done else "not in progress here",
                )
        elif kind == "sync" and message["node"] != self.node_id:
            for info in self.local.active_calls():
                self._announce(info)
        elif kind == "node_lost":
            lost, at = message.get("lost"), message.get("at")
            if isinstance(lost, str) and isinstance(at, (int, float)):
                self._node_lost(lost, float(at))

    def _node_lost(self, node: str, at: float) -> None:
        for call_id, (owner, info) in list(self.remote.items()):
            if owner == node:
                del self.remote[call_id]
                self._unconfirmed.discard(call_id)
                self._events.publish(_lost(info, at))

    def _bus_connected(self, message: dict[str, object]) -> None:
        # Messages may have been lost while disconnected: ask for every call again.
        self._unconfirmed = set(self.remote)
        self.bus.publish(CONTROL_CHANNEL, {"type": "sync"})
        if self._sync_timer is not None and self._sync_timer.active():
            self._sync_timer.cancel()
        self._sync_timer = self.clock.callLater(self.sync_grace, self._sync_over)

    def _sync_over(self) -> None:
        self._sync_timer = None
        for call_id in sorted(self._unconfirmed):
            if self.records is None:
                continue
            looked_up = self.records.get_call(call_id)
            looked_up.addCallback(self._unannounced, call_id)
            looked_up.addErrback(self._lookup_failed, call_id)
        self._unconfirmed = set()

    def _lookup_failed(self, failure: Failure, call_id: str) -> None:
        log.warn(
            "cannot look up call {call_id}: {error}",
            call_id=call_id,
            error=failure.getErrorMessage(),
        )

    def _unannounced(self, record: CallRecord | None, call_id: str) -> None:
        # Still cached and not re-announced: its node dropped it, or it ended unseen.
        if call_id not in self.remote or record is None or record.ended_at is None:
            return
        del self.remote[call_id]
        self._events.publish(CallInfo.from_record(record))
