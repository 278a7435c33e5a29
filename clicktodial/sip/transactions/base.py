"""
What every RFC 3261 §17 transaction shares: timer values, state names, and the
small surface a state machine needs from the layer that owns it.

The four machines live in their own modules (:mod:`.invite_client`,
:mod:`.noninvite_client`, :mod:`.invite_server`, :mod:`.noninvite_server`);
:mod:`.layer` matches messages to them.  Each machine is a plain class with
``__slots__`` and an explicit transition table ``{(state, input): method}``:
thousands of transactions a second must stay cheap, and the table is the one
readable place that says what every input does in every state.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, Self

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import MessageParseError, parse_message

if TYPE_CHECKING:
    from clicktodial.timers import Lingering, LingerQueue, TimerQueues

__all__ = [
    "LINGERING_STATES",
    "RELIABLE_TRANSPORTS",
    "RequestReleased",
    "State",
    "Timers",
    "Transaction",
    "TransactionCounts",
    "TransactionHost",
    "is_reliable",
    "parsed_again",
]

log = Logger(namespace="clicktodial.sip.transactions")

#: Transports that retransmit for us (RFC 3261 §17: no timers A, E, G; D, I,
#: J, K are zero).
RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})


def is_reliable(transport: str) -> bool:
    """
    Whether ``transport`` (a Via transport token such as ``"UDP"``, any case)
    is reliable in the sense of RFC 3261 §17.
    """
    return transport.upper() in RELIABLE_TRANSPORTS


@attrs.frozen
class Timers:
    """
    The RFC 3261 §17 timer base values, in seconds (Table 4 of §A).

    :ivar t1: RTT estimate; A, B, E, F, G, H, J, L, M derive from it.
    :ivar t2: the cap on non-INVITE request and INVITE response retransmission.
    :ivar t4: how long a message may stay in the network (timers I and K).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    #: 64*T1: timers B, F, H, J, L and M (and the floor of D).  Worked out once: every
    #: transaction reads it, some twice.
    timeout: float = attrs.field(init=False, eq=False, repr=False)
    #: Timer D for unreliable transports: "at least 32 seconds" (§17.1.1.2).
    timer_d: float = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "timeout", 64 * self.t1)
        object.__setattr__(self, "timer_d", max(32.0, 64 * self.t1))


class State(enum.StrEnum):
    """Transaction states, named as RFC 3261 §17 and RFC 6026 name them."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


#: States in which a transaction has done its work (the final response is sent or received)
#: and only waits out Timer D, I, J, K, L or M to absorb or pass on retransmissions: 64*T1
#: (32 s) for a non-INVITE server transaction over UDP, for instance.
LINGERING_STATES = frozenset([State.COMPLETED, State.CONFIRMED, State.ACCEPTED])


def parsed_again(data: bytes) -> Request | Response | None:
    """
    A message a transaction sent, from the octets it kept (a lingering transaction
    keeps no parsed message: see :class:`Transaction`), to send again: a new object
    whose ``serialize()`` gives back ``data`` itself.  Only the framing is checked
    (the octets are ours); ``None``, logged, if even that fails (not expected).
    """
    try:
        return parse_message(data, validate=False)
    except MessageParseError as e:
        log.warn("cannot send a message again: {error}", error=str(e))
        return None


class RequestReleased(RuntimeError):
    """A client transaction's request was read after the transaction let go of it."""


class TransactionCounts:
    """
    Retransmissions since start, counted by the machines (plain integers: a retransmission
    costs one increment; ``/metrics`` reads them at scrape time).

    :ivar requests_sent: requests our client transactions sent again: Timer A (INVITE),
        Timer E (non-INVITE), and the ACK re-sent for a retransmitted 300-699.
    :ivar responses_sent: responses our server transactions sent again: Timer G, the last
        response re-sent to a retransmitted request, and 2xx retransmissions of the TU
        passing through an RFC 6026 ``accepted`` INVITE server transaction.
    :ivar requests_received: retransmitted requests a server transaction absorbed (they
        never reach the TU): requests matching a live server transaction, and ACKs
        absorbed in ``confirmed``.
    :ivar responses_received: final responses a client transaction received again after
        its first (absorbed, re-ACKed, or a 2xx passed to the TU in ``accepted``).
    :ivar lingering: transactions now in a :data:`LINGERING_STATES` state: their work is done
        and they only wait out a timer for retransmissions (not a count of events: it goes
        down when they terminate).
    """

    __slots__ = (
        "lingering",
        "requests_received",
        "requests_sent",
        "responses_received",
        "responses_sent",
    )

    def __init__(self) -> None:
        self.requests_sent = 0
        self.responses_sent = 0
        self.requests_received = 0
        self.responses_received = 0
        self.lingering = 0


class TransactionHost(Protocol):
    """
    What a state machine needs from the layer that owns it (the
    :class:`TransactionLayer <clicktodial.sip.transactions.layer.TransactionLayer>`).
    Kept tiny so machines can be driven alone in tests.
    """

    clock: IReactorTime
    timers: Timers
    counts: TransactionCounts
    guard_timers: TimerQueues
    linger_timers: TimerQueues
    lingering: LingerQueue

    def transmit_request(self, request: Request, destination: object) -> bool:
        """Hand ``request`` to the transport; ``False`` on a transport error."""

    def transmit_response(self, response: Response, source: object) -> bool:
        """Hand ``response`` to the transport; ``False`` on a transport error."""

    def transaction_terminated(self, transaction: Transaction) -> None:
        """Forget ``transaction``: it reached ``terminated``."""


class Transaction:
    """
    State shared by the four machines.

    Timers are state data: ``_retransmit`` holds timer A, E or G, ``_timeout``
    holds B, D, F, H, I, J, K, L, M or the 100 Trying delay.  :func:`_enter` cancels
    both, so a transition that leaves a state always stops that state's timers.  Every
    timer is an entry of one of the host's two :class:`~clicktodial.timers.TimerQueues`
    (one reactor timer per length, not one per transaction) calling a function of the
    machine's class with the machine (``InviteClientTransaction._timer_a``): no bound
    method and no ``DelayedCall`` per timer.  ``guard_timers`` hold the timers a response
    or an answer usually cancels (A, B, E, F, G, 100 Trying), ``linger_timers`` those of
    :data:`LINGERING_STATES` that usually fire (D, H, I, J, K, L, M): a cancelled entry
    stays in its queue until it reaches the head or the cancelled outnumber the live, so
    cancelled Timers B would otherwise wait out 64*T1 among the Timers M.

    :ivar request: the request that created the transaction.  A client transaction lets
        go of it once it has its final response (``_request = None``): lingering in
        ``accepted`` or ``completed`` it only absorbs or passes on responses, and keeping
        the parsed message for 64*T1 would make memory at a call rate R hold R*32 s worth
        of requests.  A non-INVITE server transaction lets go of it too once its final
        response is sent over UDP (Timer J: it re-sends that response, nothing else), and
        an INVITE server transaction once the ACK confirmed it (Timer I: it absorbs ACK
        copies).  Reading it then raises :class:`RequestReleased`.  What a lingering
        transaction re-sends (the last response, the ACK for a 300-699) it keeps as the
        octets sent (:func:`parsed_again` when a retransmission asks for them): ``bytes``
        are not tracked by the garbage collector, a parsed message is a dozen objects.
    :ivar method: the method of that request (kept when the request is let go).
    :ivar state: the current :class:`State`.
    :ivar branch: the Via branch identifying the transaction.
    :ivar reliable: whether the transport is reliable (no retransmission).
    :ivar key: the matching key the layer files the transaction under.
    """

    __slots__ = (
        "_host",
        "_retransmit",
        "_interval",
        "_timeout",
        "_request",
        "method",
        "state",
        "branch",
        "reliable",
        "key",
        "__weakref__",
    )

    _host: TransactionHost
    _retransmit: Lingering | None
    _interval: float
    _timeout: Lingering | None
    _request: Request | None
    method: str
    state: State
    branch: str
    reliable: bool
    key: tuple[object, ...]

    def __init__(
        self,
        host: TransactionHost,
        request: Request,
        branch: str,
        reliable: bool,
        key: tuple[object, ...],
        state: State,
    ) -> None:
        self._host = host
        self._request = request
        self.method = request.method
        self.branch = branch
        self.reliable = reliable
        self.key = key
        self.state = state
        self._retransmit = None
        self._interval = 0.0
        self._timeout = None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.method} branch={self.branch!r} state={self.state.value}>"
        )

    @property
    def request(self) -> Request:
        """The request that created the transaction (see the class)."""
        request = self._request
        if request is None:
            raise RequestReleased(
                f"the {self.method} {type(self).__name__} has its final response and no "
                "longer keeps its request"
            )
        return request

    @property
    def is_terminated(self) -> bool:
        """Whether the machine reached ``terminated``."""
        return self.state is State.TERMINATED

    # -- timer plumbing -------------------------------------------------------

    def _enter(self, state: State) -> None:
        """Leave the current state: cancel its timers, then switch."""
        self._cancel_timers()
        lingered = self.state in LINGERING_STATES
        if lingered != (state in LINGERING_STATES):
            self._host.counts.lingering += -1 if lingered else 1
        self.state = state

    def _cancel_timers(self) -> None:
        # Lingering.cancel() does nothing to a timer that fired or was cancelled.
        if self._retransmit is not None:
            self._retransmit.cancel()
            self._retransmit = None
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None

    def _start_retransmit(self, interval: float, fired: Callable[[Self], None]) -> None:
        """
        Start Timer A, E or G for ``interval`` seconds: ``fired`` is a function of the
        machine's class, called with the machine.
        """
        self._interval = interval
        self._retransmit = self._host.guard_timers.by_length[interval].call_later_on(self, fired)

    def _start_timeout(self, delay: float, fired: Callable[[Self], None]) -> None:
        """
        Start the state's other timer (B, D, F, H, I, J, K, L, M, 100 Trying) for
        ``delay`` seconds: ``fired`` is a function of the machine's class
        (``InviteClientTransaction._timer_m``).  At a call rate R, R*64*T1 of these
        wait at once: each is an entry of a queue, without a bound method.
        """
        host = self._host
        queues = host.linger_timers if self.state in LINGERING_STATES else host.guard_timers
        self._timeout = queues.by_length[delay].call_later_on(self, fired)

    def _terminate(self) -> None:
        """Enter ``terminated`` and let the layer forget the transaction."""
        if self.state is State.TERMINATED:
            return
        self._enter(State.TERMINATED)
        self._host.transaction_terminated(self)
