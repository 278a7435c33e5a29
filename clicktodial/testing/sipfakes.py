"""
Fakes for testing SIP layers above the transport, without sockets.

- :class:`RecordingTransport`: an :class:`ISIPTransport` that records what is sent (at
  which clock time) and can be told to fail.
- :class:`FaultyNetwork`: an in-memory datagram network driven by a ``Clock``, with
  seeded loss, duplication, reordering and delay; :meth:`FaultyNetwork.endpoint`
  gives each party an :class:`ISIPTransport`.  Messages cross it serialized and are
  parsed again on arrival, as over UDP, so no object is shared between the
  two sides.

Typical use::

    clock = Clock()
    net = FaultyNetwork(clock, seed=7, loss=0.2, duplicate=0.05, reorder=0.1)
    a, b = net.endpoint("127.0.0.1", 5060), net.endpoint("127.0.0.1", 5070)
    alice = TransactionLayer(clock, a, alice_user); a.attach(alice)
    bob = TransactionLayer(clock, b, bob_user); b.attach(bob)
    ...
    clock.pump([0.05] * 1000)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.sip.address import Destination, Source
from clicktodial.sip.interfaces import IMessageHandler, ISIPTransport, ITransactionUser
from clicktodial.sip.message import Request, Response, make_response, new_call_id, new_tag
from clicktodial.sip.parser import MessageParseError, parse_message
from clicktodial.sip.transactions import TransactionLayer
from clicktodial.sip.transport import TransportError
from clicktodial.sip.uri import parse_uri

if TYPE_CHECKING:
    from clicktodial.sip.transactions import ServerTransaction, Timers

__all__ = [
    "FaultyEndpoint",
    "FaultyNetwork",
    "PEER",
    "RecordingTransport",
    "RecordingUser",
    "STEP",
    "Sent",
    "TransactionHarness",
    "assert_quiescent",
    "in_transaction",
    "run_for",
    "sip_request",
]

log = Logger()

#: Clock step for tests: a power of two, so that stepping reaches 0.5, 1.5,
#: 31.5... exactly and retransmission times can be asserted with ==.
STEP = 1 / 16


def run_for(clock: Clock, seconds: float, step: float = STEP) -> None:
    """Advance ``clock`` by ``seconds`` in small steps (timers fire in order)."""
    clock.pump([step] * round(seconds / step))


def assert_quiescent(clock: Clock, *layers: TransactionLayer) -> None:
    """Assert no transaction is left in ``layers`` and no timer on ``clock``."""
    for layer in layers:
        assert layer.active_count == 0, f"{layer.active_count} transactions left"
    pending = clock.getDelayedCalls()
    assert not pending, f"timers left: {pending}"


@attrs.frozen
class Sent:
    """
    One message handed to a :class:`RecordingTransport`.

    :ivar time: ``clock.seconds()`` when it was sent (``0.0`` without a clock).
    :ivar message: the message object as sent.
    :ivar data: its serialization at that moment (later edits do not show).
    :ivar where: the destination of a request, the source of a response.
    """

    time: float
    message: Request | Response
    data: bytes
    where: object

    @property
    def is_request(self) -> bool:
        """Whether a request (rather than a response) was sent."""
        return isinstance(self.message, Request)

    @property
    def method(self) -> str | None:
        """The request method, or the CSeq method of a response."""
        if isinstance(self.message, Request):
            return self.message.method
        return self.message.cseq.method

    @property
    def status(self) -> int | None:
        """The status code of a response, ``None`` for a request."""
        return self.message.status if isinstance(self.message, Response) else None


@implementer(ISIPTransport)
class RecordingTransport:
    """
    An :class:`ISIPTransport` that sends nothing and records everything.

    :ivar sent: every message sent, in order.
    :ivar fail: while true, every send raises :class:`TransportError` (and is not
        recorded).
    """

    def __init__(
        self,
        clock: IReactorTime | None = None,
        host: str = "127.0.0.1",
        port: int = 5060,
    ) -> None:
        self.clock = clock
        self.host = host
        self.port = port
        self.sent: list[Sent] = []
        self.fail = False

    def _record(self, message: Request | Response, where: object) -> None:
        if self.fail:
            raise TransportError(f"simulated transport failure sending to {where}")
        now = self.clock.seconds() if self.clock is not None else 0.0
        self.sent.append(Sent(now, message, message.serialize(), where))

    def send_request(self, request: Request, destination: Destination) -> None:
        """Record ``request``."""
        self._record(request, destination)

    def send_response(self, response: Response, source: object = None) -> None:
        """Record ``response``."""
        self._record(response, source)

    def local_address(self, transport: str) -> tuple[str, int]:
        """The address given at construction, whatever the transport."""
        return (self.host, self.port)

    # -- queries for tests ----------------------------------------------------

    def requests(self, method: str | None = None) -> list[Sent]:
        """The requests sent (of ``method``, if given)."""
        return [s for s in self.sent if s.is_request and (method is None or s.method == method)]

    def responses(self, status: int | None = None) -> list[Sent]:
        """The responses sent (with ``status``, if given)."""
        return [s for s in self.sent if not s.is_request and (status is None or s.status == status)]

    def times(self, method: str | None = None, status: int | None = None) -> list[float]:
        """When the matching messages were sent (requests of ``method`` or responses)."""
        chosen = self.responses(status) if status is not None else self.requests(method)
        return [s.time for s in chosen]

    def clear(self) -> None:
        """Forget what was sent so far."""
        self.sent.clear()


@implementer(ISIPTransport)
class FaultyEndpoint:
    """
    One party's :class:`ISIPTransport` on a :class:`FaultyNetwork`.  Call :func:`attach` with
    the :class:`IMessageHandler` (usually a ``TransactionLayer``) that receives.
    """

    def __init__(self, network: FaultyNetwork, host: str, port: int) -> None:
        self.network = network
        self.host = host
        self.port = port
        self.handler: IMessageHandler | None = None
        self.received = 0

    def attach(self, handler: IMessageHandler) -> None:
        """Deliver what arrives here to ``handler``."""
        self.handler = handler

    def send_request(self, request: Request, destination: Destination) -> None:
        """Put ``request`` on the network towards ``destination``."""
        self.network.carry(request.serialize(), self, (destination.host, destination.port))

    def send_response(self, response: Response, source: object = None) -> None:
        """
        Put ``response`` on the network towards the top Via's ``received``/
        ``rport`` or sent-by (RFC 3261 §18.2.2, RFC 3581).
        """
        via = response.top_via
        host = via.received or via.host
        rport = via.rport
        port = rport if isinstance(rport, int) and rport is not True else via.port or 5060
        self.network.carry(response.serialize(), self, (host, port))

    def local_address(self, transport: str) -> tuple[str, int]:
        """This endpoint's address."""
        return (self.host, self.port)

    def deliver(self, data: bytes, sender: FaultyEndpoint) -> None:
        """A datagram from ``sender`` arrived: parse and hand it on."""
        self.received += 1
        if self.handler is None:
            return
        try:
            message = parse_message(data)
        except MessageParseError as e:
            log.info("faulty network: unparsable datagram dropped: {error}", error=str(e))
            return
        source = Source("UDP", sender.host, sender.port, self.host, self.port)
        if isinstance(message, Request):
            self.handler.request_received(message, source)
        else:
            self.handler.response_received(message, source)


class FaultyNetwork:
    """
    An in-memory datagram network with seeded faults, timed by ``clock``.

    Every datagram is independently lost with probability ``loss``; one that
    survives is delivered after a uniform delay in ``delay``, is duplicated
    with probability ``duplicate`` (the copy gets its own delay), and with
    probability ``reorder`` is held back by up to ``reorder_delay`` more, so
    later datagrams overtake it.  The same seed gives the same run.

    :ivar sent: datagrams offered to the network.
    :ivar lost: datagrams dropped by ``loss`` (or sent to no endpoint).
    :ivar delivered: datagrams (and copies) handed to an endpoint.
    """

    def __init__(
        self,
        clock: IReactorTime,
        seed: int,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: tuple[float, float] = (0.005, 0.05),
        reorder_delay: float = 0.5,
    ) -> None:
        for name, p in (("loss", loss), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], not {p!r}")
        if not 0.0 <= delay[0] <= delay[1]:
            raise ValueError(f"delay must be (lo, hi) with 0 <= lo <= hi, not {delay!r}")
        self.clock = clock
        self.random = random.Random(seed)
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.delay = delay
        self.reorder_delay = reorder_delay
        self._endpoints: dict[tuple[str, int], FaultyEndpoint] = {}
        self.sent = 0
        self.lost = 0
        self.delivered = 0

    def endpoint(self, host: str, port: int) -> FaultyEndpoint:
        """The (new or existing) endpoint at ``host``:``port``."""
        existing = self._endpoints.get((host, port))
        if existing is not None:
            return existing
        endpoint = FaultyEndpoint(self, host, port)
        self._endpoints[(host, port)] = endpoint
        return endpoint

    def __iter__(self) -> Iterator[FaultyEndpoint]:
        return iter(self._endpoints.values())

    def carry(self, data: bytes, sender: FaultyEndpoint, to: tuple[str, int]) -> None:
        """Offer one datagram to the network: lose, delay, duplicate, reorder it."""
        self.sent += 1
        rnd = self.random
        target = self._endpoints.get(to)
        if target is None or rnd.random() < self.loss:
            self.lost += 1
            return
        copies = 2 if rnd.random() < self.duplicate else 1
        lo, hi = self.delay
        for _ in range(copies):
            delay = rnd.uniform(lo, hi)
            if rnd.random() < self.reorder:
                delay += rnd.uniform(0, self.reorder_delay)
            self.clock.callLater(delay, self._arrive, target, data, sender)

    def _arrive(self, target: FaultyEndpoint, data: bytes, sender: FaultyEndpoint) -> None:
        self.delivered += 1
        target.deliver(data, sender)


def unissued_nonce_authorization(realm: str = "127.0.0.1") -> tuple[str, str]:
    """
    An ``Authorization`` header for ``realm`` with a nonce the daemon never issued:
    the registrar answers it with a fresh 401 *inside* a server transaction (a
    REGISTER without any credentials is challenged statelessly instead).
    """
    return (
        "Authorization",
        f'Digest username="alice", realm="{realm}", nonce="bm90LW91cnM", uri="sip:{realm}",'
        ' response="00000000000000000000000000000000", algorithm=MD5, qop=auth,'
        ' nc=00000001, cnonce="abc"',
    )


def sip_request(
    method: str,
    uri: str = "sip:bob@127.0.0.1:5070",
    *,
    call_id: str | None = None,
    cseq: int = 1,
    from_tag: str | None = None,
    to_tag: str | None = None,
    via: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> Request:
    """
    A minimal, valid request for tests: From/To/Call-ID/CSeq/Max-Forwards,
    plus a Via only when ``via`` is given (``TransactionLayer.send_request``
    adds one).
    """
    headers: list[tuple[str, str]] = []
    if via is not None:
        headers.append(("Via", via))
    to = f"<{uri}>" if to_tag is None else f"<{uri}>;tag={to_tag}"
    headers += [
        ("Max-Forwards", "70"),
        ("From", f"<sip:alice@127.0.0.1>;tag={from_tag or new_tag()}"),
        ("To", to),
        ("Call-ID", call_id or new_call_id("127.0.0.1")),
        ("CSeq", f"{cseq} {method}"),
    ]
    headers += list(extra)
    return Request(method, parse_uri(uri), headers, body)


@implementer(ITransactionUser)
class RecordingUser:
    """
    An :class:`ITransactionUser` that records every call and can answer requests.

    :ivar answer: if set, called as ``answer(server_tx, request)`` for each new
        request (e.g. to respond at once, or to schedule a late answer).
    :ivar failures: ``(server_tx, reason)`` from server transactions'
        ``on_failure``, which this user sets on each new transaction.
    """

    def __init__(self, answer: Callable[[ServerTransaction, Request], None] | None = None) -> None:
        self.answer = answer
        self.requests: list[tuple[ServerTransaction, Request]] = []
        self.cancels: list[ServerTransaction] = []
        self.acks: list[tuple[Request, object]] = []
        self.strays: list[Response] = []
        self.failures: list[tuple[ServerTransaction, str]] = []

    def request_received(self, server_tx: ServerTransaction, request: Request) -> None:
        """Record, then answer if told how."""
        server_tx.on_failure = self._failed
        self.requests.append((server_tx, request))
        if self.answer is not None:
            self.answer(server_tx, request)

    def _failed(self, server_tx: ServerTransaction, reason: str) -> None:
        self.failures.append((server_tx, reason))

    def cancel_received(self, server_tx: ServerTransaction) -> None:
        """Record."""
        self.cancels.append(server_tx)

    def ack_received(self, request: Request, source: object) -> None:
        """Record."""
        self.acks.append((request, source))

    def stray_response(self, response: Response) -> None:
        """Record."""
        self.strays.append(response)


#: Where :meth:`TransactionHarness.receive` has requests come from by default: a peer on
#: 127.0.0.1:5080 sending to the layer on 127.0.0.1:5060.
PEER = Source("UDP", "127.0.0.1", 5080, "127.0.0.1", 5060)


def in_transaction(invite: Request, method: str, to: str | None = None) -> Request:
    """
    The ``ACK`` or ``CANCEL`` of ``invite``'s transaction (RFC 3261 §9.1, §17.1.1.3): its
    top Via, From, Call-ID and CSeq number; ``to``, the To (by default the INVITE's).
    """
    return Request(
        method,
        invite.uri,
        [
            ("Via", invite.headers.get_all("Via")[0]),
            ("Max-Forwards", "70"),
            ("From", invite.headers.get("From") or ""),
            ("To", invite.headers.get("To") or "" if to is None else to),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.seq} {method}"),
        ],
    )


class TransactionHarness:
    """
    A :class:`TransactionLayer` on a fake clock, with a :class:`RecordingTransport` (on ``port``)
    and a :class:`RecordingUser`; what a peer sends reaches it through the wire format.
    """

    def __init__(self, timers: Timers | None = None, port: int = 5060) -> None:
        self.clock = Clock()
        self.transport = RecordingTransport(self.clock, port=port)
        self.user = RecordingUser()
        if timers is None:
            self.layer = TransactionLayer(self.clock, self.transport, self.user)
        else:
            self.layer = TransactionLayer(self.clock, self.transport, self.user, timers)

    def receive(self, data: bytes | Request, source: Source = PEER) -> None:
        """A request from ``source``, parsed from its bytes as if off the wire."""
        if isinstance(data, Request):
            data = data.serialize()
        parsed = parse_message(data)
        assert isinstance(parsed, Request)
        self.layer.request_received(parsed, source)

    def reply(self, request: Request, status: int, to_tag: str | None = "b1") -> None:
        """A peer's ``status`` response to ``request`` (sent by this layer) arriving."""
        parsed = parse_message(make_response(request, status, to_tag=to_tag).serialize())
        assert isinstance(parsed, Response)
        self.layer.response_received(parsed, None)
