"""
Kamailio as a SIP provider for the trunk tests (tests/interop/kamailio_provider.cfg): one
account with digest, registrations in memory, calls out relayed to a "PSTN phone" (a SIPp
UAS running tests/interop/sipp/pstn_phone.xml), calls in from the PSTN phone's address
sent to our registered Contact. Later call tests reuse :class:`KamailioProvider`.

Everything on loopback; every wait bounded; processes stopped by their PID.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import REPO_ROOT, stop_process, wait_until  # type: ignore[import-not-found]

__all__ = ["FRONT_CFG", "PROVIDER_CFG", "KamailioProvider", "kamailio_front_argv"]

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
        timeout: float = 20.0,
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
