"""
A call's media through a relay (``[media] relay``, docs/media.md "Media
relay"): every description one phone is sent on behalf of the other goes
through the relay's ``offer`` or ``answer`` and names the relay instead of
the other phone.

* :class:`CallRelay`: one call's relay state: whether it is relayed (``auto``
  decides at the first offer relayed between the phones), the offer awaiting
  its answer, the session to delete when the call ends, and what happens
  when the relay fails (``[media:rtpengine] on_failure``).
* :class:`RelayBridge`: the :class:`IBridge` a media flow (RFC 3725 Flow I, Flow IV or
  a plugin's) drives when the call is relayed: it rewrites the SDP the flow
  passes between the phones and keeps the flow's steps in order while a
  relay command is outstanding.  Answers of our own (Flow IV's held answer,
  ringback) never go through the relay: the relay only stands between the
  two phones.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.interfaces import IActiveCallClaims, IBridge, ICallRecordStore, IMediaRelay
from clicktodial.sip.sdp import SDPParseError, SessionDescription

if TYPE_CHECKING:
    from clicktodial.calls.call import Call

__all__ = [
    "RELAY_STATES",
    "CallRelay",
    "LostCalls",
    "RelayBridge",
    "RelayFailed",
    "RelaySettings",
    "needs_relay",
    "sdp_address",
]

log = Logger(namespace="clicktodial.calls.relay")

#: What a call's ``media_relay`` says: not relayed, relayed, or relay failed and went on without.
RELAY_STATES = ("off", "pending", "relayed", "unrelayed")


class RelayFailed(Exception):
    """The relay failed and ``on_failure = fail``: the call fails (``media-relay-failed``)."""


def sdp_address(sdp: bytes | None) -> str | None:
    """The connection address of the first audio stream of ``sdp`` (None: none usable)."""
    if not sdp:
        return None
    try:
        description = SessionDescription.parse(sdp)
    except SDPParseError:
        return None
    for media, connection in description.media:
        if media.port == 0:
            continue
        chosen = connection or description.connection
        if chosen is None:
            return None
        try:
            address = ipaddress.ip_address(chosen.address)
        except ValueError:
            return None
        return None if address.is_unspecified else address.compressed
    return None


def _is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_private and not ip.is_loopback


def needs_relay(sides: list[tuple[bytes | None, str | None]]) -> bool:
    """
    ``[media] relay = auto``: whether a call between phones with these
    (SDP, signalling source address) needs the relay: a phone's SDP address
    differs from where its signalling comes from (it is behind NAT), or is
    private while another phone's is not.  Unknown values count as no reason.
    """
    addresses = []
    for sdp, source in sides:
        address = sdp_address(sdp)
        if address is None:
            continue
        if source is not None and ipaddress.ip_address(source).compressed != address:
            return True
        addresses.append(address)
    private = {_is_private(a) for a in addresses}
    return len(private) == 2


class CallRelay:
    """
    The relay of one call.

    :ivar state: one of :data:`RELAY_STATES`: ``pending`` until the first offer
        between the phones decides (``relay = auto``); ``relayed``;
        ``off``; ``unrelayed`` (the relay failed, ``on_failure = unrelayed``).
    """

    def __init__(
        self,
        relay: IMediaRelay,
        call_id: str,
        *,
        auto: bool,
        on_failure: str,
    ) -> None:
        self.relay = relay
        self.call_id = call_id
        self.auto = auto
        self.on_failure = on_failure
        self.state = "pending" if auto else "relayed"
        #: The role whose relayed offer waits for its answer.
        self.open_offer: str | None = None
        #: Whether the relay holds a session of this call (to delete at the end).
        self.has_session = False

    @property
    def active(self) -> bool:
        """Whether descriptions go through the relay (so far)."""
        return self.state in ("pending", "relayed")

    def _set(self, state: str) -> None:
        if state != self.state:
            log.info("call {record}: media relay {state}", record=self.call_id, state=state)
            self.state = state

    def decide(self, sides: list[tuple[bytes | None, str | None]]) -> None:
        """``auto``: relay this call or not, from what is known of the phones."""
        if self.state == "pending":
            self._set("relayed" if needs_relay(sides) else "off")

    def offer(self, role: str, sdp: bytes, source: str | None) -> Deferred[bytes]:
        """``sdp``, offered by ``role``'s phone, as the other phone must see it."""
        if self.state != "relayed":
            return succeed(sdp)
        first = not self.has_session
        self.has_session = True
        self.open_offer = role
        d = self.relay.offer(self.call_id, role, sdp, source)
        return d.addErrback(self._failed, "offer", sdp, first)

    def answer(self, role: str, sdp: bytes, source: str | None) -> Deferred[bytes]:
        """``sdp``, ``role``'s answer to the open offer, as the offerer must see it."""
        offerer, self.open_offer = self.open_offer, None
        if self.state != "relayed" or offerer is None or offerer == role:
            return succeed(sdp)
        d = self.relay.answer(self.call_id, offerer, role, sdp, source)
        return d.addErrback(self._failed, "answer", sdp, False)

    def _failed(self, failure: Failure, command: str, sdp: bytes, first: bool) -> bytes:
        log.warn(
            "call {record}: media relay {command} failed: {error}",
            record=self.call_id,
            command=command,
            error=failure.getErrorMessage(),
        )
        if first and self.on_failure == "unrelayed":
            # Nothing was relayed yet: the phones can still be given each other's own SDP.
            self._set("unrelayed")
            self.has_session = False
            self.open_offer = None
            return sdp
        raise RelayFailed(failure.getErrorMessage())

    def end(self) -> None:
        """The call is over: delete its relay session, if it has one."""
        self.open_offer = None
        if not self.has_session:
            return
        self.has_session = False

        def failed(failure: Failure) -> None:
            log.warn(
                "call {record}: media relay delete failed: {error}",
                record=self.call_id,
                error=failure.getErrorMessage(),
            )

        self.relay.delete(self.call_id).addErrback(failed)


@attrs.frozen
class RelaySettings:
    """``[media] relay`` and ``[media:rtpengine] on_failure``, with the relay itself."""

    relay: IMediaRelay
    auto: bool = False
    on_failure: str = "fail"

    def for_call(self, call_id: str) -> CallRelay:
        """The relay state of a new call."""
        return CallRelay(self.relay, call_id, auto=self.auto, on_failure=self.on_failure)


class LostCalls:
    """
    Records a node's active calls as ended ``lost`` (calls this daemon is not
    running: left active by an earlier run of it, or run by a dead node) and,
    with a media relay, deletes their relay sessions: the store ends them and
    names them at once (:class:`IActiveCallClaims`: of several daemons reaping the
    same node, each call is deleted by one), then a ``delete`` goes to the
    relay for each, at most ``concurrency`` at a time, in the background (the
    count is returned without waiting for the relay; failures are logged).
    A call that never had a session costs one refused ``delete``.

    A store without :class:`IActiveCallClaims` still ends the calls; their relay
    sessions are then left to the relay's own timeout (logged once).

    :ivar pending: deletes sent or waiting to be sent.
    """

    def __init__(self, relay: IMediaRelay | None, *, concurrency: int = 8) -> None:
        self.relay = relay
        self.pending = 0
        self._semaphore = DeferredSemaphore(concurrency)
        self._warned = False

    def end(self, records: ICallRecordStore, node: str | None, at: float) -> Deferred[int]:
        """
        End ``node``'s active calls (all nodes': :class:`None`) as ``lost`` at ``at``.

        :return: fires with the number of calls ended once the store has
            ended them (not waiting for the relay).
        """
        claims = IActiveCallClaims(records, None) if self.relay is not None else None
        if claims is None:
            if self.relay is not None and not self._warned:
                self._warned = True
                log.warn(
                    "the call record store does not provide IActiveCallClaims: the media"
                    " relay sessions of lost calls are left to the relay's timeout"
                )
            return records.end_active_calls(node, at, "lost")

        def claimed(call_ids: list[str]) -> int:
            if call_ids:
                self._delete_all(call_ids, node)
            return len(call_ids)

        return claims.claim_active_calls(node, at, "lost").addCallback(claimed)

    def _delete_all(self, call_ids: list[str], node: str | None) -> None:
        relay = self.relay
        assert relay is not None
        self.pending += len(call_ids)
        errors: list[str] = []

        def one(call_id: str) -> Deferred[None]:
            def failed(failure: Failure) -> None:
                errors.append(f"{call_id}: {failure.getErrorMessage()}")

            def done(result: None) -> None:
                self.pending -= 1

            return self._semaphore.run(relay.delete, call_id).addErrback(failed).addBoth(done)

        def finished(_: object) -> None:
            if errors:
                log.warn(
                    "media relay: {failed} of {count} delete(s) of lost calls of node"
                    " {node} failed (first: {first})",
                    failed=len(errors),
                    count=len(call_ids),
                    node=node,
                    first=errors[0],
                )
            else:
                log.info(
                    "media relay: deleted the sessions of {count} lost call(s) of node {node}",
                    count=len(call_ids),
                    node=node,
                )

        DeferredList([one(call_id) for call_id in call_ids]).addCallback(finished)


@implementer(IBridge)
class RelayBridge:
    """
    The :class:`IBridge` of a relayed call: the call's own bridge, with the
    descriptions passed between the phones rewritten by the relay.  Steps
    the flow takes while a relay command is outstanding wait for it, so
    the phones see them in the flow's order.
    """

    def __init__(self, call: Call, relay: CallRelay) -> None:
        self.call = call
        self.relay = relay
        self._tail: Deferred[None] | None = None

    @property
    def caller_offer(self) -> bytes:
        return self.call.caller_offer

    def _then(self, step: Callable[[], object]) -> None:
        """Run ``step`` now, or after the relay commands outstanding."""
        if self._tail is None:
            step()
            return

        def run(_: object) -> None:
            step()

        self._tail.addCallback(run)

    def _through(self, d: Deferred[bytes], send: Callable[[bytes], object]) -> None:
        """Send what ``d`` gives (in order); a relay failure fails the call."""

        def relayed(sdp: bytes) -> None:
            send(sdp)

        def failed(failure: Failure) -> None:
            failure.trap(RelayFailed)
            self.call.media_relay_failed()

        tail: Deferred[None]
        if self._tail is None:
            tail = d.addCallbacks(relayed, failed)
        else:
            tail = self._tail.addCallback(lambda _: d).addCallbacks(relayed, failed)
        self._tail = tail

        def settled(result: object) -> object:
            if self._tail is tail:
                self._tail = None
            return result

        tail.addBoth(settled)

    def _sides(self, callee_sdp: bytes | None) -> list[tuple[bytes | None, str | None]]:
        call = self.call
        return [(call.caller_offer, call.caller.source), (callee_sdp, call.callee.source)]

    def held_answer(self, offer: bytes) -> bytes:
        return self.call.held_answer(offer)

    def ack_caller(self, answer: bytes) -> None:
        if self.relay.open_offer == "caller":
            d = self.relay.answer("callee", answer, self.call.callee.source)
            self._through(d, self.call.ack_caller)
        else:
            self._then(lambda: self.call.ack_caller(answer))

    def invite_callee(self, offer: bytes | None) -> None:
        if offer is None:
            self._then(lambda: self.call.invite_callee(None))
            return
        # Flow I: only the caller is known yet.
        self.relay.decide(self._sides(None))
        d = self.relay.offer("caller", offer, self.call.caller.source)
        self._through(d, self.call.invite_callee)

    def ack_callee(self, answer: bytes | None) -> None:
        if answer is not None and self.relay.open_offer == "caller":
            d = self.relay.answer("callee", answer, self.call.callee.source)
            self._through(d, self.call.ack_callee)
        else:
            self._then(lambda: self.call.ack_callee(answer))

    def reinvite_caller(self, offer: bytes, answered: Callable[[bytes], None]) -> None:
        self.relay.decide(self._sides(offer))

        def caller_answered(answer: bytes) -> None:
            d = self.relay.answer("caller", answer, self.call.caller.source)
            self._through(d, answered)

        d = self.relay.offer("callee", offer, self.call.callee.source)
        self._through(d, lambda sdp: self.call.reinvite_caller(sdp, caller_answered))

    def bridged(self) -> None:
        self._then(self.call.bridged)

    def bridge_failed(self, status: int) -> None:
        self._then(lambda: self.call.bridge_failed(status))
