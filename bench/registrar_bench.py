"""
How many authenticated REGISTERs per second the registrar handles on one
core, with the memory store (no network, no transaction layer: parse,
registrar, serialize).

Run: python3 bench/registrar_bench.py [--users 1000] [--rounds 5]
                                      [--backend memory|sqlite]

With ``--backend sqlite`` the SQL store runs on a temporary SQLite file,
its database work inline (no thread pool), so the figure is registrar plus
SQLite on one core.

Each phone has answered one challenge; every measured REGISTER is a
refresh carrying Digest credentials (SHA-256, nc incrementing), as phones
send them in steady state. Bounded: users x rounds requests.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from clicktodial.sip.address import Source
from clicktodial.sip.digest import compute_ha1, compute_response, parse_auth_params
from clicktodial.sip.message import Request
from clicktodial.sip.parser import parse_message
from clicktodial.sip.registrar import Registrar, RegistrarSettings
from clicktodial.store.memory import MemoryStore
from clicktodial.store.sql import SQLStore
from clicktodial.store.values import NewUser
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    cheap_password_hasher,
    success_result_of,
)

DOMAIN = "example.com"


def register_bytes(user: str, cseq: int, auth: str | None) -> bytes:
    lines = [
        f"REGISTER sip:{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{user}{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{DOMAIN}>;tag=f{user}",
        f"To: <sip:{user}@{DOMAIN}>",
        f"Call-ID: reg-{user}@127.0.0.1",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@127.0.0.1:5062;transport=udp>;expires=3600",
        "User-Agent: bench",
    ]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=["memory", "sqlite"], default="memory")
    args = parser.parse_args()

    clock = InlineReactor()
    clock.advance(1_700_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        store: MemoryStore | SQLStore
        if args.backend == "memory":
            store = MemoryStore(
                clock, realm=DOMAIN, hash_pool=InlineThreadPool(), hasher=cheap_password_hasher()
            )
        else:
            store = SQLStore(
                clock,
                f"sqlite:///{tmp}/bench.sqlite",
                InlineThreadPool(),
                InlineThreadPool(),
                realm=DOMAIN,
                hasher=cheap_password_hasher(),
                auto_upgrade=True,
            )
        success_result_of(store.start())
        try:
            run(args.users, args.rounds, args.backend, clock, store)
        finally:
            success_result_of(store.stop())


def run(
    n_users: int, rounds: int, backend: str, clock: InlineReactor, store: MemoryStore | SQLStore
) -> None:
    """Register every phone once, then time ``rounds`` refreshes each."""
    users = [f"u{i}" for i in range(n_users)]
    success_result_of(store.add_users([NewUser(u, sip_password=f"pw-{u}") for u in users]))
    registrar = Registrar(clock, store, store, DOMAIN, RegistrarSettings(nonce_lifetime=3600))
    source = Source("UDP", "127.0.0.1", 5062, "127.0.0.1", 5060)

    # One challenge per phone.
    nonces = {}
    for user in users:
        request = parse_message(register_bytes(user, 1, None))
        assert isinstance(request, Request)
        response = success_result_of(registrar.handle_register(request, source))
        challenge = parse_auth_params(response.headers.get_fields("WWW-Authenticate")[0][7:])
        nonces[user] = challenge["nonce"]

    # Precompute the datagrams: the client's hashing is not ours to time.
    datagrams = []
    for round_ in range(rounds):
        nc = f"{round_ + 1:08x}"
        for user in users:
            ha1 = compute_ha1(user, DOMAIN, f"pw-{user}", "SHA-256")
            digest = compute_response(
                ha1, nonces[user], nc, "cn", "auth", "REGISTER", f"sip:{DOMAIN}", "SHA-256"
            )
            auth = (
                f'Digest username="{user}", realm="{DOMAIN}", '
                f'nonce="{nonces[user]}", uri="sip:{DOMAIN}", '
                f'response="{digest}", algorithm=SHA-256, cnonce="cn", '
                f"nc={nc}, qop=auth"
            )
            datagrams.append(register_bytes(user, round_ + 2, auth))

    statuses: dict[int, int] = {}
    started = time.perf_counter()
    for data in datagrams:
        request = parse_message(data)
        assert isinstance(request, Request)
        response = success_result_of(registrar.handle_register(request, source))
        response.serialize()
        statuses[response.status] = statuses.get(response.status, 0) + 1
    elapsed = time.perf_counter() - started
    n = len(datagrams)
    print(
        f"{n} authenticated REGISTERs in {elapsed:.2f} s:"
        f" {n / elapsed:,.0f}/s on one core (parse + registrar + {backend}"
        f" store + serialize); statuses {statuses}"
    )


if __name__ == "__main__":
    main()
