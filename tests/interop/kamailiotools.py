"""
Kamailio as a SIP provider for the trunk tests (tests/interop/kamailio_provider.cfg): one
account with digest, registrations in memory, calls out relayed to a "PSTN phone" (a SIPp
UAS running tests/interop/sipp/pstn_phone.xml), calls in from the PSTN phone's address
sent to our registered Contact. Later call tests reuse :class:`KamailioProvider`.

Everything on loopback; every wait bounded; processes stopped by their PID.
"""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

from conftest import (  # type: ignore[import-not-found]
    REPO_ROOT,
    START_TIMEOUT,
    stop_process,
    twistd_argv,
    wait_until,
)

__all__ = [
    "FRONT_CFG",
    "PROVIDER_CFG",
    "KamailioProvider",
    "PrivateDNS",
    "in_private_network",
    "kamailio_front_argv",
]

PROVIDER_CFG = REPO_ROOT / "tests" / "interop" / "kamailio_provider.cfg"
#: The shipped front proxy for several daemons (dispatcher over a list of nodes).
FRONT_CFG = REPO_ROOT / "conf" / "kamailio" / "kamailio.cfg"


def kamailio_front_argv(directory: Path, listen: str, nodes: list[str]) -> list[str]:
    """
    Kamailio running the shipped front (:data:`FRONT_CFG`) in the foreground on UDP
    ``listen`` (``HOST:PORT``), dispatching to ``nodes`` (``HOST:PORT`` each, written to
    ``directory/dispatcher.list``), its runtime files in ``directory/kamailio-run``.
    """
    dispatcher = directory / "dispatcher.list"
    dispatcher.write_text("".join(f"1 sip:{node}\n" for node in nodes))
    (directory / "kamailio-run").mkdir()
    return [
        "kamailio",
        "-f",
        str(FRONT_CFG),
        "-DD",
        "-E",
        "-l",
        f"udp:{listen}",
        "-A",
        f'DSLIST="{dispatcher}"',
        "-m",
        "64",
        "-M",
        "8",
        "-Y",
        str(directory / "kamailio-run"),
    ]


class KamailioProvider:
    """
    A running Kamailio provider.

    :param address: the provider's loopback address (e.g. ``127.0.0.20``).
    :param pstn: ``(ip, port)`` of the PSTN phone: calls out go there, calls in come
        from its IP.
    :param max_expires: the longest registration granted (short: refreshes in a test).
    :param fail_invites: answer authenticated INVITEs with 503 (fail-over tests).
    :param transports: ``udp`` and/or ``tcp`` listeners on ``port``.
    """

    def __init__(
        self,
        tmp_path: Path,
        *,
        address: str,
        port: int,
        user: str,
        password: str,
        realm: str = "provider.test",
        pstn: tuple[str, int] = ("127.0.0.30", 5099),
        max_expires: int = 3600,
        fail_invites: bool = False,
        transports: tuple[str, ...] = ("udp",),
        timeout: float = START_TIMEOUT,
    ) -> None:
        self.address = address
        self.port = port
        self.user = user
        self.password = password
        self.realm = realm
        self.pstn = pstn
        run = tmp_path / f"kamailio-provider-{address}-{port}"
        run.mkdir()
        self.output_path = run / "kamailio.out"
        argv = [
            "kamailio",
            "-f",
            str(PROVIDER_CFG),
            "-DD",
            "-E",
            "-m",
            "64",
            "-M",
            "8",
            "-Y",
            str(run),
        ]
        for transport in transports:
            argv += ["-l", f"{transport}:{address}:{port}"]
        argv += [
            "-A",
            f'AUTH_USER="{user}"',
            "-A",
            f'AUTH_PASSWORD="{password}"',
            "-A",
            f'REALM="{realm}"',
            "-A",
            f'PSTN_URI="sip:{pstn[0]}:{pstn[1]}"',
            "-A",
            f'PSTN_IP="{pstn[0]}"',
            "-A",
            f"MAX_EXPIRES={max_expires}",
        ]
        if fail_invites:
            argv += ["-A", "FAIL_INVITES"]
        with self.output_path.open("wb") as out:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until(
            lambda: "Listening on" in self.output() or self.process.poll() is not None,
            timeout,
            "kamailio (provider) to start",
        )
        if self.process.poll() is not None:
            raise RuntimeError(f"kamailio (provider) did not start:\n{self.output()}")

    @property
    def proxy_uri(self) -> str:
        """The ``[trunk:NAME] proxy`` naming this provider (UDP)."""
        return f"sip:{self.address}:{self.port}"

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def saved_contacts(self) -> list[str]:
        """The Contacts the provider saved, in order (one line per REGISTER accepted)."""
        return re.findall(r"REGISTER from \S+: saved (\S+)", self.output())

    def challenges(self) -> int:
        """REGISTERs the provider challenged."""
        return len(re.findall(r"REGISTER from \S+: challenged", self.output()))

    def stop(self) -> None:
        stop_process(self.process)


def in_private_network() -> bool:
    """Whether this process runs in a network namespace of its own (only ``lo``, as
    ``unshare -n`` makes): the only place a test may give ``lo`` another address."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def _nameserver() -> str | None:
    """The first IPv4 ``nameserver`` of /etc/resolv.conf (where the daemon's DNS goes)."""
    for line in Path("/etc/resolv.conf").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1]:
            return parts[1]
    return None


class PrivateDNS:
    """
    A DNS server for ``records`` (twisted.names, ``twistd dns --pyzone``) at the address
    /etc/resolv.conf names, given to ``lo`` of this private network namespace only (the
    daemon's resolver reads /etc/resolv.conf; nothing leaves the namespace). Call only when
    :func:`in_private_network`.

    :param zone: the zone's domain (``provider.test``).
    :param records: Python zone lines (``SRV('_sip._udp.provider.test', 10, 0, 5060,
        'a.provider.test')``, ``A('a.provider.test', '127.0.0.21')``).
    """

    def __init__(
        self, tmp_path: Path, zone: str, records: list[str], timeout: float = START_TIMEOUT
    ):
        if not in_private_network():
            raise RuntimeError("PrivateDNS needs a private network namespace (unshare -n)")
        address = _nameserver()
        if address is None:
            raise RuntimeError("no IPv4 nameserver in /etc/resolv.conf")
        self.address = address
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True, timeout=10)
        zone_file = tmp_path / "zone.py"
        zone_file.write_text(
            "zone = [\n"
            f"    SOA({zone!r}, mname='ns.{zone}', rname='root.{zone}', serial=1,"
            " refresh=60, retry=60, expire=60, minimum=1),\n"
            + "".join(f"    {record},\n" for record in records)
            + "]\n"
        )
        self.output_path = tmp_path / "dns.out"
        with self.output_path.open("wb") as out:
            self.process = subprocess.Popen(
                twistd_argv(
                    "-n", "--pidfile=", "dns", "--pyzone", str(zone_file), "-i", address, "-p", "53"
                ),
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: "starting on 53" in self.output() or self.process.poll() is not None,
            timeout,
            "the private DNS server to start",
        )
        if self.process.poll() is not None:
            raise RuntimeError(f"the private DNS server did not start:\n{self.output()}")

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)
        subprocess.run(
            ["ip", "addr", "del", f"{self.address}/32", "dev", "lo"], check=False, timeout=10
        )
