#!/usr/bin/env python3
"""
CPU cost of an authenticated REGISTER with ``[daemon] workers = N``, per process: a figure
that a machine shared with other work does not distort as much as the highest rate does.

    python3 bench/workers_cpu.py --workers 1 2 --rate 250 --seconds 8 [--store postgresql]
        [--sleeps]

For each N: a fresh database with 10,000 users (``clicktodial user import``), the daemon
(``twistd -n clicktodial``, ``[log] level = warn``, the [limits] bounds off as in
bench/register.sh), ready when OPTIONS from 32 source ports are answered by N distinct
workers; then bench/regload.py at ``--rate`` for ``--seconds`` from 16 source ports. Printed:
the generator's summary, the CPU seconds (user + system, /proc/PID/stat) each process of the
daemon used during the load, per registration, and how the load split between workers.
Runs under ``unshare -n`` (it re-runs itself there): loopback only. Every process it starts
is stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clicktodial.testing.daemon import DaemonProcess, sip_answering_ports

ROOT = Path(__file__).resolve().parents[1]
PORT = 45260
WEB_PORT = 45280
PG = "postgresql+psycopg://postgres@/clicktodial_wbench?host=/var/run/postgresql"
#: Counted with --sleeps: SQLite's busy handler sleeps with clock_nanosleep; the store's
#: write lock (clicktodial.store.writelock) waits in flock.
SLEEP_EVENTS = ("syscalls:sys_enter_clock_nanosleep", "syscalls:sys_enter_flock")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def run(workers: int, args: argparse.Namespace, work: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.store == "postgresql":
        for sql in (
            "DROP DATABASE IF EXISTS clicktodial_wbench",
            "CREATE DATABASE clicktodial_wbench",
        ):
            subprocess.run(
                ["psql", "-q", "-U", "postgres", "-h", "/var/run/postgresql", "-c", sql],
                check=True,
                capture_output=True,
            )
        url = PG
    else:
        for old in work.glob("db.sqlite*"):
            old.unlink()
        url = f"sqlite:///{work}/db.sqlite"
    ini = work / "c.ini"
    ini.write_text(
        f"[sip]\ndomain = 127.0.0.1\nlisten = 127.0.0.1:{PORT}\ntransports = udp\n"
        "udp_buffer = 4194304\n[registrar]\ndigest_algorithms = MD5\nauth_refuse_after = 0\n"
        f"[web]\nlisten = tcp:{WEB_PORT}:interface=127.0.0.1\n[store]\nurl = {url}\n"
        f"[log]\nlevel = warn\nfile = {work}/daemon.log\n"
        "[limits]\nrate_max_requests = 0\nmax_transactions = 0\n"
        f"[daemon]\nworkers = {workers}\n"
    )
    cli = [sys.executable, "-m", "clicktodial.cli", "--config", str(ini)]
    subprocess.run([*cli, "db", "upgrade"], check=True, env=env, capture_output=True)
    subprocess.run(
        [*cli, "user", "import", str(work / "users.csv")], check=True, env=env, capture_output=True
    )
    daemon = DaemonProcess(ini, tree=ROOT, output=work / "twistd.out").start()
    try:
        daemon.wait_ready(
            lambda: len(sip_answering_ports(PORT)) >= workers, 90, "every worker", interval=1
        )
        pids = {"main" if workers > 1 else "daemon": daemon.pid}
        if workers > 1:
            for n, pid in enumerate(sorted(children(daemon.pid))):
                pids[f"worker{n}"] = pid
        if args.sleeps:
            # Threads made after this point are not counted: the store's threads exist by
            # now (the schema check, the readiness OPTIONS).
            tids = [t.name for pid in pids.values() for t in Path(f"/proc/{pid}/task").iterdir()]
            perf = subprocess.Popen(
                ["perf", "stat", "-x", ",", "-e", ",".join(SLEEP_EVENTS), "-t", ",".join(tids)],
                stderr=subprocess.PIPE,
                text=True,
            )
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        count = int(args.rate * args.seconds)
        load = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "regload.py"),
                "--target",
                f"127.0.0.1:{PORT}",
                "--domain",
                "127.0.0.1",
                "--users",
                "10000",
                "--count",
                str(count),
                "--rate",
                str(args.rate),
                "--max-seconds",
                str(args.seconds),
                "--timeout",
                "10",
                "--sockets",
                "16",
                "--window",
                "100000",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        sleeps: dict[str, int] = {}
        if args.sleeps:
            perf.send_signal(signal.SIGINT)
            for line in perf.communicate(timeout=30)[1].splitlines():
                fields = line.split(",")
                if len(fields) > 2 and fields[2] in SLEEP_EVENTS:
                    sleeps[fields[2].split("_enter_")[1]] = int(fields[0] or 0)
        summary = json.loads(load.stdout)
        done = max(1, int(summary["succeeded"]))
        cpu = {name: round(1000 * (after[name] - before[name]) / done, 3) for name in pids}
        return {
            "workers": workers,
            "load": summary,
            "cpu_ms_per_registration": cpu,
            "total_cpu_ms_per_registration": round(sum(cpu.values()), 3),
            **({"syscalls": sleeps} if args.sleeps else {}),
        }
    finally:
        daemon.stop(60)


def main() -> int:
    if not os.environ.get("WORKERS_CPU_NETNS"):
        os.environ["WORKERS_CPU_NETNS"] = "1"
        os.execvp("unshare", ["unshare", "-n", sys.executable, *sys.argv])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rate", type=float, default=250)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument(
        "--sleeps",
        action="store_true",
        help="count the daemon's clock_nanosleep (SQLite's busy handler polling for its"
        " lock) and flock (the store's write lock) system calls during the load (perf stat)",
    )
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="workers-cpu."))
    try:
        (work / "users.csv").write_text("".join(f"u{i:05d},p{i:05d}\n" for i in range(10000)))
        for workers in args.workers:
            result = run(workers, args, work)
            print(json.dumps(result))
            sys.stdout.flush()
            time.sleep(2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
