"""
Scale-out: two clicktodial nodes (127.0.0.2, 127.0.0.3) behind Kamailio (127.0.0.1,
conf/kamailio/kamailio.cfg) sharing one PostgreSQL database (its unix socket,
``$CLICKTODIAL_TEST_PG_URL``), with the PostgreSQL event bus. Two baresip softphones
register through the front; a call runs on node B; SIPp keeps a REGISTER load going
through the front; node B is killed with SIGKILL mid-load. Then:

- the phones keep their registrations (they are in PostgreSQL) and refresh through the
  front on the surviving node;
- the SIPp load completes without a failed registration (Kamailio fails over);
- node A finds B dead (no heartbeat for dead_after) and records B's call as ended, lost;
- a new call placed on node A connects both phones through the front (Path as Route);
- the database is consistent: no active call of B, only A in the nodes table, every
  ended call has a reason.

Needs kamailio, baresip, sipp and PostgreSQL; everything on loopback, every wait bounded,
every process stopped by its PID. Run it inside ``unshare -n`` (scripts/test does).
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import time
import wave
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from calltools import Baresip, CallsApi, clicktodial_cli
from conftest import (  # type: ignore[import-not-found]
    REPO_ROOT,
    Stoppable,
    find_free_port,
    stop_process,
    wait_until,
)
from kamailiotools import kamailio_front_argv  # type: ignore[import-not-found]
from sqlalchemy import URL, create_engine, text

from clicktodial.cluster.bus import libpq_conninfo
from clicktodial.testing.postgres import test_database_url

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in ("kamailio", "baresip", "sipp")),
        reason="needs kamailio, baresip and sipp",
    ),
]

FRONT = "127.0.0.1"
NODES = {"node-a": "127.0.0.2", "node-b": "127.0.0.3"}
TIMEOUT = 40.0
DEAD_AFTER = 4
SIPP_SCENARIO = REPO_ROOT / "tests" / "interop" / "sipp" / "reg_uac_auth.xml"


@pytest.fixture
def database() -> Iterator[URL]:
    """A fresh PostgreSQL database for the cluster, dropped afterwards."""
    base = test_database_url()
    if base is None:
        pytest.skip("CLICKTODIAL_TEST_PG_URL is empty")
    name = "clicktodial_scaleout_" + secrets.token_hex(4)
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def node_ini(node: str, sip_port: int, web_port: int, url: URL, secret: str) -> str:
    address = NODES[node]
    return (
        "[sip]\n"
        f"domain = {FRONT}\n"
        f"listen = {address}:{sip_port}\n"
        "transports = udp\n"
        "[registrar]\n"
        "min_expires = 5\n"
        "digest_algorithms = MD5\n"
        # The front's Path (with the phone's ;received) is the route to a phone.
        "path = trusted\n"
        f"trusted_proxies = {FRONT}\n"
        f"nonce_secret = {secret}\n"
        "[web]\n"
        f"listen = tcp:{web_port}:interface={address}\n"
        "[store]\n"
        f"url = {url.render_as_string(hide_password=False)}\n"
        "auto_upgrade = yes\n"
        "demo_users = yes\n"
        "[cluster]\n"
        "bus = postgres\n"
        f"node_id = {node}\n"
        "heartbeat_interval = 1\n"
        f"dead_after = {DEAD_AFTER}\n"
    )


class Process:
    """A subprocess with its output in a file."""

    def __init__(self, argv: list[str], output: Path, **kwargs: Any) -> None:
        self.output_path = output
        with output.open("wb") as out:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **kwargs
            )

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


def baresip(tmp_path: Path, user: str, front_port: int) -> Baresip:
    """``user``'s phone registering through the front, answering at once, sending silence."""
    # ausine supports only 48 kHz sources: a G.711 call needs an 8 kHz one (silence).
    silence = tmp_path / f"silence-{user}.wav"
    with wave.open(str(silence), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000 * 120)
    return Baresip(
        tmp_path / f"baresip-{user}",
        user,
        f"<sip:{user}@{FRONT}:{front_port};transport=udp>;auth_pass={user};regint=10;"
        "answermode=auto\n",
        audio_source=f"aufile,{silence}",
    )


def query(url: URL, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_conninfo(url)) as connection:
        return list(connection.execute(sql).fetchall())


def test_a_node_killed_mid_load_loses_only_its_calls_and_the_survivor_serves_everyone(
    tmp_path: Path,
    database: URL,
    start_daemon: Callable[[str], Any],
    running: list[Stoppable],
) -> None:
    sip_port, front_port = find_free_port(), find_free_port()
    secret = secrets.token_hex(16)
    controls: dict[str, CallsApi] = {}
    daemons: dict[str, Any] = {}
    for node in NODES:  # one after the other: the first creates the schema and demo users
        web_port = find_free_port()
        daemons[node] = start_daemon(node_ini(node, sip_port, web_port, database, secret))
        daemons[node].wait_for_tcp(web_port, host=NODES[node])
        daemons[node].wait_for_log("event bus connected")
        controls[node] = CallsApi(
            web_port, daemons[node].config_path, host=NODES[node], admin=f"operator-{node}"
        )
    ini = tmp_path / "daemon0.ini"
    clicktodial_cli(ini, "user", "add", "carol", "--sip-password", "carol")

    kamailio = Process(
        kamailio_front_argv(
            tmp_path,
            f"{FRONT}:{front_port}",
            [f"{address}:{sip_port}" for address in NODES.values()],
        ),
        tmp_path / "kamailio.out",
    )
    running.append(kamailio)
    wait_until(
        lambda: "Listening on" in kamailio.output() or kamailio.process.poll() is not None,
        TIMEOUT,
        "kamailio to start",
    )
    assert kamailio.process.poll() is None, kamailio.output()

    phones = {user: baresip(tmp_path, user, front_port) for user in ("alice", "bob")}
    running.extend(phones.values())
    for phone in phones.values():
        phone.wait_for_output("200 OK", TIMEOUT)
    paths = query(database, "SELECT aor, path FROM bindings ORDER BY aor")
    assert [aor for aor, _ in paths] == ["sip:alice@127.0.0.1", "sip:bob@127.0.0.1"]
    assert all(f"sip:{FRONT}:{front_port};lr" in path for _, path in paths), paths

    # A call run by node B, shown on node A too.
    doomed = controls["node-b"].place("alice", "bob")["id"]
    wait_until(
        lambda: controls["node-b"].get(doomed)["state"] == "connected",
        TIMEOUT,
        "the call on node B to connect",
    )
    assert query(database, f"SELECT node FROM calls WHERE call_id = '{doomed}'") == [("node-b",)]

    # REGISTER load through the front; node B dies in the middle of it.
    load = Process(
        [
            "sipp",
            FRONT + f":{front_port}",
            "-sf",
            str(SIPP_SCENARIO),
            "-i",
            "127.0.0.1",
            "-p",
            str(find_free_port()),
            "-s",
            "carol",
            "-au",
            "carol",
            "-ap",
            "carol",
            "-r",
            "10",
            "-m",
            "80",
            "-l",
            "20",
            "-nostdin",
            "-timeout",
            "60s",
            "-timeout_error",
            "-trace_err",
            "-error_file",
            str(tmp_path / "sipp-errors.log"),
        ],
        tmp_path / "sipp.out",
        cwd=tmp_path,
    )
    running.append(load)

    def carol_registers() -> int:
        return sum(d.log().count("REGISTER sip:carol@127.0.0.1") for d in daemons.values())

    # Killed once the load is under way (whatever the time SIPp took to start).
    wait_until(lambda: carol_registers() >= 10, TIMEOUT, "the REGISTER load to be under way")
    killed_at = time.time()
    daemons["node-b"].process.send_signal(signal.SIGKILL)
    daemons["node-b"].process.wait(30)

    daemons["node-a"].wait_for_log("node node-b is gone", DEAD_AFTER + TIMEOUT)
    lost = controls["node-a"].get(doomed)
    assert lost["reason"] == "lost" and lost["who_hung_up"] == "system", lost
    assert datetime.fromisoformat(lost["ended_at"]).timestamp() >= killed_at

    assert load.process.wait(90) == 0, load.output()[-3000:]

    # The phones' registrations survive and are refreshed by node A through the front.
    refreshed = daemons["node-a"].log().count("REGISTER sip:alice@127.0.0.1")
    wait_until(
        lambda: daemons["node-a"].log().count("REGISTER sip:alice@127.0.0.1") > refreshed,
        TIMEOUT,
        "alice's refresh on node A",
    )
    assert (
        len(
            query(
                database,
                "SELECT aor FROM bindings WHERE aor LIKE 'sip:%@127.0.0.1'"
                f" AND expires_at > {time.time()}",
            )
        )
        >= 2
    )

    # A new call, on the survivor, connects both phones through the front.
    fresh = controls["node-a"].place("alice", "bob")["id"]
    wait_until(
        lambda: controls["node-a"].get(fresh)["state"] == "connected",
        TIMEOUT,
        "the new call on node A to connect",
    )
    assert controls["node-a"].hang_up(fresh, "alice")
    wait_until(
        lambda: controls["node-a"].get(fresh).get("ended_at") is not None,
        TIMEOUT,
        "the new call to end",
    )

    # Consistency.
    assert query(database, "SELECT node FROM nodes") == [("node-a",)]
    assert query(database, "SELECT count(*) FROM calls WHERE ended_at IS NULL") == [(0,)]
    assert query(
        database, "SELECT count(*) FROM calls WHERE ended_at IS NOT NULL AND end_reason IS NULL"
    ) == [(0,)]
    for daemon in daemons.values():
        assert "Traceback" not in daemon.log()
