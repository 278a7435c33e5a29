"""
A tiny SIP user agent on the real transport and transaction layers, for
interop tests against SIPp: run it as a subprocess, read JSON lines.

    python -m clicktodial.testing.sipapp --role uas --port 5070 --invite-status 486
    python -m clicktodial.testing.sipapp --role uac --port 5080 \\
        --target 127.0.0.1:5090 --method OPTIONS --count 2

Each line on stdout is one JSON object with an ``"event"``: ``listening``
(with the ``port``), ``request`` (UAS: a new request reached the TU), ``cancel``,
``ack``, ``failure`` (a server transaction failed: Timer H, transport error),
``response`` (UAC: a response reached the TU), ``stray``, and finally ``done``
(with ``active``: transactions still alive, and ``pending_timers``).

The UAS answers INVITE with ``--invite-status`` (a 2xx carries an SDP answer
and is retransmitted by this TU until the ACK, RFC 3261 §13.3.1.4), BYE,
OPTIONS, MESSAGE and anything else 200, CANCEL'd INVITEs 487.  The UAC sends
``--count`` requests of ``--method`` one after the other (an INVITE's 2xx is
ACKed and followed by a BYE).  Loopback only: it refuses other targets.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from clicktodial.config import parse_config
from clicktodial.sip.address import Destination
from clicktodial.sip.interfaces import ITransactionUser
from clicktodial.sip.message import Request, Response, make_response, new_call_id, new_tag
from clicktodial.sip.transactions import ServerTransaction, Timers, TransactionLayer
from clicktodial.sip.transport import SIPTransportLayer
from clicktodial.sip.uri import parse_uri

__all__ = ["main"]

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def emit(event: str, **fields: Any) -> None:
    """Write one JSON line (this is a CLI harness: stdout is its interface)."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


@implementer(ITransactionUser)
class Answerer:
    """A trivial UAS transaction user."""

    def __init__(
        self, clock: IReactorTime, timers: Timers, invite_status: int, answer_delay: float = 0.0
    ) -> None:
        self.clock = clock
        self.timers = timers
        self.invite_status = invite_status
        self.answer_delay = answer_delay
        self.contact = "<sip:uas@127.0.0.1>"
        # §13.3.1.4: the UAS core retransmits its 2xx until the ACK arrives.
        self._unacked: dict[str, tuple[ServerTransaction, Response, IDelayedCall]] = {}

    def request_received(self, server_tx: ServerTransaction, request: Request) -> None:
        server_tx.on_failure = self._failed
        emit("request", method=request.method, call_id=request.call_id, state=server_tx.state)
        if request.method == "INVITE" and self.answer_delay > 0:
            self.clock.callLater(self.answer_delay, self._answer, server_tx, request)
        else:
            self._answer(server_tx, request)

    def _answer(self, server_tx: ServerTransaction, request: Request) -> None:
        if server_tx.is_terminated or server_tx.last_status >= 200:
            return  # CANCELled meanwhile
        tag = new_tag()
        if request.method == "INVITE":
            status = self.invite_status
            response = make_response(request, status, to_tag=tag)
            if 200 <= status < 300:
                response.headers.add("Contact", self.contact)
                response.headers.add("Content-Type", "application/sdp")
                response.body = SDP
                call = self.clock.callLater(
                    self.timers.t1, self._retransmit_2xx, request.call_id, self.timers.t1
                )
                self._unacked[request.call_id] = (server_tx, response, call)
            server_tx.respond(response)
        else:
            server_tx.respond(make_response(request, 200, to_tag=tag))

    def _retransmit_2xx(self, call_id: str, interval: float) -> None:
        server_tx, response, _ = self._unacked[call_id]
        if server_tx.is_terminated:
            del self._unacked[call_id]
            emit("failure", reason="no ACK for 2xx", call_id=call_id)
            return
        server_tx.respond(response)
        interval = min(interval * 2, self.timers.t2)
        call = self.clock.callLater(interval, self._retransmit_2xx, call_id, interval)
        self._unacked[call_id] = (server_tx, response, call)

    def _failed(self, server_tx: ServerTransaction, reason: str) -> None:
        emit("failure", reason=reason, method=server_tx.method, call_id=server_tx.request.call_id)

    def cancel_received(self, server_tx: ServerTransaction) -> None:
        emit("cancel", call_id=server_tx.request.call_id)
        server_tx.respond(make_response(server_tx.request, 487, to_tag=new_tag()))

    def ack_received(self, request: Request, source: object) -> None:
        emit("ack", call_id=request.call_id)
        entry = self._unacked.pop(request.call_id, None)
        if entry is not None and entry[2].active():
            entry[2].cancel()

    def stray_response(self, response: Response) -> None:
        emit("stray", status=response.status)


@implementer(ITransactionUser)
class Caller:
    """A trivial UAC transaction user: it only reports what reaches it."""

    def request_received(self, server_tx: ServerTransaction, request: Request) -> None:
        emit("request", method=request.method, call_id=request.call_id)
        server_tx.respond(make_response(request, 200, to_tag=new_tag()))

    def cancel_received(self, server_tx: ServerTransaction) -> None:
        emit("cancel", call_id=server_tx.request.call_id)

    def ack_received(self, request: Request, source: object) -> None:
        emit("ack", call_id=request.call_id)

    def stray_response(self, response: Response) -> None:
        emit("stray", status=response.status)


def _request(
    method: str,
    target: Destination,
    local: tuple[str, int],
    cseq: int = 1,
    call_id: str | None = None,
    from_tag: str | None = None,
    to: str | None = None,
) -> Request:
    uri = f"sip:service@{target.host}:{target.port}"
    headers = [
        ("Max-Forwards", "70"),
        ("From", f"<sip:sipapp@{local[0]}:{local[1]}>;tag={from_tag or new_tag()}"),
        ("To", to or f"<{uri}>"),
        ("Call-ID", call_id or new_call_id(local[0])),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", f"<sip:sipapp@{local[0]}:{local[1]}>"),
    ]
    body = b""
    if method == "INVITE":
        headers.append(("Content-Type", "application/sdp"))
        body = SDP
    elif method == "MESSAGE":
        headers.append(("Content-Type", "text/plain"))
        body = b"hello"
    return Request(method, parse_uri(uri), headers, body)


def _transaction(
    clock: Any, layer: TransactionLayer, request: Request, target: Destination
) -> defer.Deferred[Response]:
    """Send ``request``; report each response; fire with the final one."""
    final: defer.Deferred[Response] = defer.Deferred()

    def on_response(response: Response) -> None:
        emit("response", status=response.status, method=response.cseq.method, time=clock.seconds())
        if response.status >= 200 and not final.called:
            final.callback(response)

    layer.send_request(request, target, on_response)
    return final


async def _run_uac(
    clock: Any,
    layer: TransactionLayer,
    transport: SIPTransportLayer,
    target: Destination,
    method: str,
    count: int,
) -> None:
    local = transport.local_address("UDP")
    for _ in range(count):
        request = _request(method, target, local)
        final = await _transaction(clock, layer, request, target)
        if method == "INVITE" and 200 <= final.status < 300:
            # §13.2.2.4: the UAC core ACKs the 2xx itself, then hangs up.
            to = final.headers.get("To") or ""
            ack = _request(
                "ACK",
                target,
                local,
                cseq=1,
                call_id=request.call_id,
                from_tag=request.from_.tag,
                to=to,
            )
            layer.send_ack(ack, target)
            bye = _request(
                "BYE",
                target,
                local,
                cseq=2,
                call_id=request.call_id,
                from_tag=request.from_.tag,
                to=to,
            )
            await _transaction(clock, layer, bye, target)


def _loopback(host: str) -> str:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"sipapp: refusing non-loopback address {host}")
    return host


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clicktodial.testing.sipapp")
    parser.add_argument("--role", choices=("uac", "uas"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--target", help="host:port of the peer (uac)")
    parser.add_argument("--method", default="OPTIONS")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--invite-status", type=int, default=200)
    parser.add_argument(
        "--answer-delay",
        type=float,
        default=0.0,
        help="uas: seconds before answering an INVITE (100 Trying comes first)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=40.0,
        help="stop after this many seconds (uas; uac lingers this long at most)",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=0.0,
        help="uac: seconds to keep running after the last request",
    )
    parser.add_argument("--t1", type=float, default=0.5)
    parser.add_argument("--t2", type=float, default=4.0)
    parser.add_argument("--t4", type=float, default=5.0)
    return parser.parse_args(argv)


async def _main(reactor: Any, args: argparse.Namespace) -> None:
    host = _loopback(args.host)
    timers = Timers(args.t1, args.t2, args.t4)
    # Through the INI parser, so settings added later keep their defaults.
    config = parse_config(
        f"[sip]\ndomain = {host}\nlisten = {host}:{args.port}\ntransports = udp\n"
        f"t1 = {args.t1}\nt2 = {args.t2}\nt4 = {args.t4}\n",
        "<sipapp>",
    ).sip
    transport = SIPTransportLayer(reactor, config)
    user: Answerer | Caller = (
        Answerer(reactor, timers, args.invite_status, args.answer_delay)
        if args.role == "uas"
        else Caller()
    )
    layer = TransactionLayer(reactor, transport, user, timers)
    transport.connect(layer)
    transport.startService()
    emit("listening", port=transport.local_address("UDP")[1])
    deadline: defer.Deferred[None] = task.deferLater(reactor, args.duration, lambda: None)
    if args.role == "uac":
        if not args.target:
            raise SystemExit("sipapp: --target host:port is required for --role uac")
        thost, _, tport = args.target.rpartition(":")
        target = Destination("UDP", _loopback(thost), int(tport))
        run = defer.Deferred.fromCoroutine(
            _run_uac(reactor, layer, transport, target, args.method.upper(), args.count)
        )
        first = defer.DeferredList([run, deadline], fireOnOneCallback=True, consumeErrors=True)
        await first
        if args.linger:
            await task.deferLater(reactor, args.linger, lambda: None)
    else:
        await deadline
    pending = [c for c in reactor.getDelayedCalls() if c.active()]
    emit("done", active=layer.active_count, pending_timers=len(pending))
    await transport.stopService()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: ``python -m clicktodial.testing.sipapp ...``."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(_main(reactor, args)))


if __name__ == "__main__":
    main()
