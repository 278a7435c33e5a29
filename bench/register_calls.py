"""Python function calls per authenticated registration, counted in one process (no sockets).

    PYTHONPATH=$PWD python3 bench/register_calls.py [--count 2000] [--top FILE]

A load-independent companion of ``bench/register_cpu.sh`` (whose count runs a real daemon
and includes retransmissions when the machine is loaded): the daemon's service tree
(:func:`clicktodial.service.build_service`, configured as ``register_cpu.sh`` configures it:
MD5 only, ``[limits]`` off, ``[log] level = warn`` through the daemon's observer) is built on a
fake reactor with the memory store, its database work inline. Each registration is
REGISTER → 401 → REGISTER with credentials → 200, the datagrams handed to the UDP protocol's
``datagramReceived`` as the reactor would, the clock advanced by 1 ms after each. A profile
hook (``sys.setprofile``) counts Python ``call`` events and built-in calls over the measured
registrations (after ``--warm`` registrations not counted). What is not counted: the
reactor's own work per wake-up (``Port.doRead``, ``Port.write``'s ``isIPAddress`` and
``sendto``), the store's thread hop, SQLite.
"""

from __future__ import annotations

import argparse
import collections
import gc
import hashlib
import re
import sys
import time
from types import FrameType
from typing import Any

from twisted.logger import LogLevel, globalLogBeginner

from clicktodial.config import parse_config
from clicktodial.gcpolicy import apply_daemon_gc_policy
from clicktodial.log import DaemonLogObserver
from clicktodial.service import build_service
from clicktodial.store.memory import MemoryStore
from clicktodial.store.sql import SQLStore
from clicktodial.store.values import NewUser
from clicktodial.testing.fakes import InlineThreadPool, cheap_password_hasher, success_result_of
from clicktodial.testing.transport import FakeReactor

DOMAIN = "127.0.0.1"
CONFIG = f"""[sip]
domain = {DOMAIN}
listen = 127.0.0.1:5060
transports = udp
[registrar]
digest_algorithms = MD5
auth_refuse_after = 0
[web]
listen = tcp:8181:interface=127.0.0.1
[store]
backend = memory
[limits]
rate_max_requests = 0
max_transactions = 0
"""
_NONCE = re.compile(rb'nonce="([^"]*)"')


class _InlineReactor(FakeReactor):
    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _register(user: str, index: int, cseq: int, authorization: str = "") -> bytes:
    sent_by = f"127.0.0.2:{5100 + index % 50}"
    return (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sent_by};rport;branch=z9hG4bKrc.{index}.{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=rc{index}\r\n"
        f"To: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-ID: rc-{index}@regload\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{user}@{sent_by}>;expires=3600\r\n"
        f"{authorization}"
        "User-Agent: regload\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--top", default="")
    parser.add_argument(
        "--no-hook",
        action="store_true",
        help="count nothing (no profile hook): for callgrind, whose instruction count the"
        " hook would inflate several times",
    )
    parser.add_argument(
        "--gc",
        action="store_true",
        help="also print the GC-tracked objects the measured registrations leave alive"
        " (len(gc.get_objects()) after a full collection, before and after) and the"
        " collector's time over them (a gc.callbacks hook)",
    )
    parser.add_argument(
        "--store",
        default="memory",
        help="memory, or a SQLAlchemy URL (sqlite:///PATH, a new file): the SQL store,"
        " its database work inline (SQLite's own work is built-in calls)",
    )
    args = parser.parse_args()
    try:  # (as tap.py does; a tree without the gate is measured too)
        from clicktodial.log import LOG_LEVELS
    except ImportError:
        observer = DaemonLogObserver(lambda event: None, LogLevel.warn)
    else:
        observer = DaemonLogObserver(lambda event: None, LogLevel.warn, LOG_LEVELS)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    reactor = _InlineReactor()
    reactor.advance(1_800_000_000)
    store: MemoryStore | SQLStore
    if args.store == "memory":
        store = MemoryStore(
            reactor, realm=DOMAIN, hash_pool=InlineThreadPool(), hasher=cheap_password_hasher()
        )
    else:
        store = SQLStore(
            reactor,
            args.store,
            InlineThreadPool(),
            InlineThreadPool(),
            realm=DOMAIN,
            hasher=cheap_password_hasher(),
            auto_upgrade=True,
        )
        success_result_of(store.start())
    total = args.warm + args.count
    users = [(f"u{i:05d}", f"p{i:05d}") for i in range(total)]
    root = build_service(parse_config(CONFIG, "x.ini"), reactor, store=store)
    root.startService()
    success_result_of(store.add_users([NewUser(u, sip_password=p) for u, p in users]))
    apply_daemon_gc_policy()  # as the daemon does once started
    [port] = reactor.udp_ports
    receive = port.protocol.datagramReceived
    by_code: collections.Counter[Any] = collections.Counter()
    counts = [0, 0]

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            counts[0] += 1
            if args.top:
                by_code[frame.f_code] += 1
        elif event == "c_call":
            counts[1] += 1

    gc_time = [0.0, 0.0, 0]  # total seconds, start of the current collection, collections

    def gc_hook(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_time[1] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_time[1]
            gc_time[2] += 1

    tracked = 0
    statuses: collections.Counter[str] = collections.Counter()
    for i, (user, password) in enumerate(users):
        if i == args.warm:
            if args.gc:
                gc.collect()
                tracked = len(gc.get_objects())
                gc.callbacks.append(gc_hook)
            if not args.no_hook:
                sys.setprofile(hook)
        addr = ("127.0.0.2", 5100 + i % 50)
        receive(_register(user, i, 1), addr)
        reactor.advance(0.001)
        [(challenge, _)] = port.take()
        match = _NONCE.search(challenge)
        assert match is not None, challenge
        nonce = match.group(1).decode()
        ha1 = _md5(f"{user}:{DOMAIN}:{password}")
        cnonce = f"{i:x}"
        ha2 = _md5(f"REGISTER:sip:{DOMAIN}")
        response = _md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        auth = (  # as bench/regload.py answers
            f'Authorization: Digest username="{user}", realm="{DOMAIN}", nonce="{nonce}",'
            f' uri="sip:{DOMAIN}", response="{response}", algorithm=MD5, qop=auth,'
            f' nc=00000001, cnonce="{cnonce}"\r\n'
        )
        receive(_register(user, i, 2, auth), addr)
        reactor.advance(0.001)
        for data, _ in port.take():
            statuses[data[8:11].decode()] += 1
    sys.setprofile(None)
    n = args.count
    if args.gc:
        gc.callbacks.remove(gc_hook)
        gc.collect()
        print(
            f"{(len(gc.get_objects()) - tracked) / n:.1f} GC-tracked objects left alive per"
            f" registration; {gc_time[2]} collections, {gc_time[0] * 1e6 / n:.1f} µs of GC"
            " per registration"
        )
    root.stopService()
    if isinstance(store, SQLStore):
        print(
            f"store: {store.group_commit.jobs / total:.2f} group-commit jobs and"
            f" {store.group_commit.batches / total:.2f} batches per registration"
        )
    print(
        f"{counts[0] / n:.1f} Python calls per registration ({counts[1] / n:.1f} calls of"
        f" built-ins; {n} registrations; final statuses {dict(statuses)})"
    )
    if args.top:
        with open(args.top, "w") as f:
            for code, c in by_code.most_common():
                f.write(
                    f"{c / n:8.2f} {code.co_qualname} {code.co_filename}:{code.co_firstlineno}\n"
                )


if __name__ == "__main__":
    main()
