"""
The registrar on the real UDP transport and transaction layer, with a
memory store, for interop tests against SIPp: run it as a subprocess, read
JSON lines.

    python -m clicktodial.testing.registrarapp --port 5070 \\
        --user alice:secret --algorithms MD5,SHA-256 --duration 10

Lines on stdout: ``listening`` (with the ``port``), then, at the end,
``bindings`` (every binding: ``aor``, ``contact``, ``expires_in``) and ``done``
(with ``active`` transactions). Loopback only: it refuses other addresses.
The domain and realm are the listening address.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Sequence
from typing import Any, cast

from twisted.internet import defer, task
from zope.interface import implementer

from clicktodial.config import HostPort, parse_config
from clicktodial.sip.address import Source
from clicktodial.sip.interfaces import ITransactionUser
from clicktodial.sip.message import Request, Response, make_response, new_tag
from clicktodial.sip.registrar import Registrar, RegistrarSettings
from clicktodial.sip.transactions import ServerTransaction, Timers, TransactionLayer
from clicktodial.sip.transport import SIPTransportLayer
from clicktodial.store.memory import MemoryStore
from clicktodial.testing.fakes import cheap_password_hasher
from clicktodial.throttle import AuthThrottle, ThrottleSettings

__all__ = ["main"]


def emit(event: str, **fields: Any) -> None:
    """Write one JSON line (this is a CLI harness: stdout is its interface)."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


@implementer(ITransactionUser)
class RegistrarUser:
    """Hands REGISTERs to the registrar; answers anything else 405."""

    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar

    def request_received(self, server_tx: ServerTransaction, request: Request) -> None:
        if request.method != "REGISTER":
            response = make_response(request, 405, to_tag=new_tag())
            response.headers.add("Allow", "REGISTER")
            server_tx.respond(response)
            return
        d = self.registrar.handle_register(request, cast(Source, server_tx.source))
        d.addCallback(server_tx.respond)

    def cancel_received(self, server_tx: ServerTransaction) -> None:
        """Nothing to cancel: REGISTER is not INVITE."""

    def ack_received(self, request: Request, source: object) -> None:
        """No INVITEs, so no ACKs to act on."""

    def stray_response(self, response: Response) -> None:
        """We send no requests."""


def _loopback(host: str) -> str:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"registrarapp: refusing non-loopback address {host}")
    return host


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clicktodial.testing.registrarapp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--user", action="append", default=[], help="NAME:SIP_PASSWORD (repeatable)"
    )
    parser.add_argument("--algorithms", default="SHA-256,MD5", help="digest challenges, in order")
    parser.add_argument("--auth-free-failures", type=int, default=3)
    parser.add_argument("--auth-refuse-after", type=int, default=20)
    parser.add_argument("--duration", type=float, default=20.0, help="stop after this many seconds")
    return parser.parse_args(argv)


async def _main(reactor: Any, args: argparse.Namespace) -> None:
    host = _loopback(args.host)
    store = MemoryStore(reactor, realm=host, hasher=cheap_password_hasher())
    await store.start()
    for user in args.user:
        name, _, password = user.partition(":")
        await store.add_user(name, sip_password=password)
    settings = RegistrarSettings(
        digest_algorithms=tuple(a.strip() for a in args.algorithms.split(","))
    )
    throttle = AuthThrottle(
        reactor,
        ThrottleSettings(
            free_failures=args.auth_free_failures, refuse_after=args.auth_refuse_after
        ),
    )
    registrar = Registrar(reactor, store, store, host, settings, throttle)
    # Through the INI parser, so that keys added later get their defaults.
    config = parse_config(
        f"[sip]\ndomain = {host}\nlisten = {HostPort(host, args.port)}\n"
        "transports = udp\nuser_agent = clicktodial-registrarapp\n",
        "registrarapp",
    ).sip
    transport = SIPTransportLayer(reactor, config)
    layer = TransactionLayer(reactor, transport, RegistrarUser(registrar), Timers())
    transport.connect(layer)
    transport.startService()
    registrar.startService()
    emit("listening", port=transport.local_address("UDP")[1])
    await task.deferLater(reactor, args.duration, lambda: None)
    now = reactor.seconds()
    bindings = await store.all_bindings(now)
    emit(
        "bindings",
        bindings=[
            {
                "aor": b.aor,
                "contact": b.contact,
                "expires_in": b.expires_in(now),
                "received": b.received,
            }
            for b in bindings
        ],
    )
    emit("done", active=layer.active_count)
    registrar.stopService()
    await transport.stopService()
    await store.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: ``python -m clicktodial.testing.registrarapp ...``."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(_main(reactor, args)))


if __name__ == "__main__":
    main()
