"""
A SIP user agent built on the real transport, transaction layer and UA core
(:obj:`clicktodial.sip.ua`), for interop tests against SIPp: run it as a
subprocess and read JSON lines from its stdout.

    python -m clicktodial.testing.uaapp --role ua-uas --port 0 --t1 0.1
    python -m clicktodial.testing.uaapp --role ua-uac --target 127.0.0.1:5090 --count 2

Each stdout line is a JSON object with an ``"event"``: ``listening`` (with the
``port``), then per call ``incoming`` (UAS), ``provisional``, ``answered``,
``failed`` (UAC, with ``status``), ``confirmed`` (UAS: ACK received),
``cancelled``, ``terminated`` (with ``reason``), and finally ``done`` with
``sessions``/``calls`` (UA core entries left), ``transactions`` and
``pending_timers``: all 0 when nothing leaked.

The UAS rings (unless ``--no-ring``) and answers every INVITE with 200 and an
SDP answer (or offer) after ``--answer-delay`` s; it retransmits the 200 until
the ACK and BYEs after 64*T1 without one.  The UAC places ``--count`` calls one
after another, each with an SDP offer, holds each ``--hold`` s after the 2xx,
then BYEs.  Loopback only.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from clicktodial.config import HostPort, SipConfig
from clicktodial.sip.address import Destination
from clicktodial.sip.headers import NameAddr
from clicktodial.sip.interfaces import IIncomingCallHandler, ISessionHandler
from clicktodial.sip.message import Request, Response
from clicktodial.sip.sdp import SDP_CONTENT_TYPE, Party
from clicktodial.sip.transactions import Timers, TransactionLayer
from clicktodial.sip.transport import SIPTransportLayer
from clicktodial.sip.ua import (
    IncomingCall,
    IncomingRequest,
    OutgoingCall,
    Session,
    SessionHandlerBase,
    UserAgent,
)
from clicktodial.sip.uri import URI

__all__ = ["main"]


def sdp(host: str, version: int = 1) -> bytes:
    """An audio description on ``host`` (no media is ever sent)."""
    return (
        f"v=0\r\no=clicktodial 1 {version} IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\n"
        f"t=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def emit(event: str, **fields: Any) -> None:
    """Write one JSON line (this is a CLI harness: stdout is its interface)."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


@implementer(ISessionHandler)
class Reporter(SessionHandlerBase):
    """Reports every session event as a JSON line."""

    def __init__(self, on_end: defer.Deferred[None] | None = None) -> None:
        self.on_end = on_end
        self.hold: float = 0.0
        self.clock: IReactorTime | None = None

    def _end(self) -> None:
        if self.on_end is not None and not self.on_end.called:
            self.on_end.callback(None)

    def call_provisional(
        self, call: OutgoingCall, response: Response, session: Session | None
    ) -> None:
        emit("provisional", status=response.status, call_id=call.call_id)

    def call_answered(self, call: OutgoingCall, session: Session, response: Response) -> None:
        emit("answered", status=response.status, call_id=call.call_id)
        if session.dialog.offer_answer.expects_answer_from(Party.LOCAL):
            session.ack(sdp("127.0.0.1"), SDP_CONTENT_TYPE)
        assert self.clock is not None
        self.clock.callLater(self.hold, session.bye)

    def call_failed(self, call: OutgoingCall, response: Response) -> None:
        emit("failed", status=response.status, call_id=call.call_id)
        self._end()

    def call_cancelled(self, call: IncomingCall) -> None:
        emit("cancelled", call_id=call.request.call_id)

    def session_confirmed(self, session: Session, ack: Request) -> None:
        emit("confirmed", call_id=session.dialog.call_id, answer=bool(ack.body))

    def request_received(self, session: Session, request: IncomingRequest) -> None:
        emit("request", method=request.method, call_id=session.dialog.call_id)
        super().request_received(session, request)

    def session_terminated(self, session: Session, reason: str) -> None:
        emit("terminated", reason=reason, call_id=session.dialog.call_id)
        self._end()


@implementer(IIncomingCallHandler)
class Answerer:
    """Answers every INVITE: 180 (optional), then 200 with SDP after a delay."""

    def __init__(self, clock: IReactorTime, host: str, ring: bool, delay: float) -> None:
        self.clock = clock
        self.host = host
        self.ring = ring
        self.delay = delay

    def incoming_call(self, call: IncomingCall) -> ISessionHandler:
        emit("incoming", call_id=call.request.call_id, offer=call.offer is not None)
        if self.ring:
            call.provisional(180)

        def answer() -> None:
            if call.is_pending:
                call.accept(sdp(self.host), SDP_CONTENT_TYPE)

        if self.delay:
            self.clock.callLater(self.delay, answer)
        else:
            answer()
        return Reporter()

    def request_received(self, request: IncomingRequest) -> None:
        emit("request", method=request.method, call_id=request.request.call_id)
        request.respond(200 if request.method == "OPTIONS" else 405)


def _loopback(host: str) -> str:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"uaapp: refusing non-loopback address {host}")
    return host


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clicktodial.testing.uaapp")
    parser.add_argument("--role", choices=("ua-uac", "ua-uas"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--target", help="host:port of the peer (ua-uac)")
    parser.add_argument("--count", type=int, default=1, help="ua-uac: calls to place")
    parser.add_argument("--hold", type=float, default=0.5, help="ua-uac: seconds before BYE")
    parser.add_argument("--no-ring", action="store_true", help="ua-uas: no 180")
    parser.add_argument("--answer-delay", type=float, default=0.0)
    parser.add_argument(
        "--duration", type=float, default=40.0, help="stop after this many seconds at most"
    )
    parser.add_argument(
        "--linger", type=float, default=0.0, help="seconds to keep running after the last call"
    )
    parser.add_argument("--t1", type=float, default=0.5)
    parser.add_argument("--t2", type=float, default=4.0)
    parser.add_argument("--t4", type=float, default=5.0)
    return parser.parse_args(argv)


async def _run_uac(
    reactor: Any,
    ua: UserAgent,
    host: str,
    port: int,
    target: Destination,
    count: int,
    hold: float,
) -> None:
    me = URI("sip", "uaapp", host, port)
    callee = URI("sip", "service", target.host, target.port)
    for _ in range(count):
        ended: defer.Deferred[None] = defer.Deferred()
        reporter = Reporter(ended)
        reporter.hold = hold
        reporter.clock = reactor
        ua.invite(
            callee,
            from_=NameAddr(me),
            to=NameAddr(callee),
            handler=reporter,
            body=sdp(host),
            destination=target,
        )
        await ended


async def _main(reactor: Any, args: argparse.Namespace) -> None:
    host = _loopback(args.host)
    timers = Timers(args.t1, args.t2, args.t4)
    config = SipConfig(
        domain=host,
        listen=HostPort(host, args.port),
        transports=("udp",),
        t1=args.t1,
        t2=args.t2,
        t4=args.t4,
        user_agent="clicktodial-uaapp",
    )
    transport = SIPTransportLayer(reactor, config)
    answerer = Answerer(reactor, host, not args.no_ring, args.answer_delay)
    ua = UserAgent(reactor, answerer, user_agent="clicktodial-uaapp")
    layer = TransactionLayer(reactor, transport, ua, timers)
    ua.attach(layer)
    transport.connect(layer)
    transport.startService()
    port = transport.local_address("UDP")[1]
    emit("listening", port=port)
    deadline: defer.Deferred[None] = task.deferLater(reactor, args.duration, lambda: None)
    if args.role == "ua-uac":
        if not args.target:
            raise SystemExit("uaapp: --target host:port is required for --role ua-uac")
        thost, _, tport = args.target.rpartition(":")
        target = Destination("UDP", _loopback(thost), int(tport))
        run = defer.Deferred.fromCoroutine(
            _run_uac(reactor, ua, host, port, target, args.count, args.hold)
        )
        await defer.DeferredList([run, deadline], fireOnOneCallback=True, consumeErrors=True)
        if args.linger:
            await task.deferLater(reactor, args.linger, lambda: None)
    else:
        await deadline
    if not deadline.called:
        deadline.addErrback(lambda failure: None)
        deadline.cancel()
    pending = [c for c in reactor.getDelayedCalls() if c.active()]
    emit(
        "done",
        sessions=len(ua.sessions),
        core=ua.active_count,
        transactions=layer.active_count,
        pending_timers=len(pending),
    )
    await transport.stopService()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: ``python -m clicktodial.testing.uaapp ...``."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(_main(reactor, args)))


if __name__ == "__main__":
    main()
