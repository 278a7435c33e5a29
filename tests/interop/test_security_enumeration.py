"""
User enumeration over SIP, tried as an attacker would: SIPVicious ``svwar`` (REGISTER,
OPTIONS and INVITE scans, with and without ``--force``) against the real daemon with 51
numbered users among the 71 extensions it tries, and the same question asked directly:
does any answer to a request naming an existing user differ from the answer naming an
unknown one (status, reason, header names, the challenge's shape)?

The daemon must answer both alike (docs/security.md, "Who can learn what"): a REGISTER
is challenged whoever it names, an OPTIONS is answered by the server, an INVITE from a
phone is refused with one 403 whatever its Request-URI names.

Loopback only (the suite runs in a private network namespace); svwar is bounded by
``--maximumtime`` and a subprocess timeout.
"""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        shutil.which("sipvicious_svwar") is None,
        reason="SIPVicious (PyPI sipvicious) is not installed",
    ),
]

FIRST_USER, LAST_USER = 100, 150
SCAN = "90-160"  # 51 users among 71 extensions


def _ini(sip_port: int, web_port: int, tmp: Path) -> str:
    return (
        "[sip]\n"
        "domain = 127.0.0.1\n"
        f"listen = 127.0.0.1:{sip_port}\n"
        "[web]\n"
        f"listen = tcp:{web_port}:interface=127.0.0.1\n"
        "[store]\n"
        f"url = sqlite:///{tmp}/clicktodial.sqlite\n"
        "auto_upgrade = yes\n"
        "demo_users = yes\n"
    )


@pytest.fixture
def daemon(
    start_daemon: Callable[[str], Any],
    free_port: Callable[[], int],
    tmp_path: Path,
    run_cli: Callable[..., str],
) -> int:
    """A daemon with users 100..150 (SIP passwords only); returns its SIP port."""
    sip_port, web_port = free_port(), free_port()
    daemon = start_daemon(_ini(sip_port, web_port, tmp_path))
    daemon.wait_for_tcp(web_port)
    users = tmp_path / "users.csv"
    users.write_text(
        "".join(f"{n},{secrets.token_hex(8)}\n" for n in range(FIRST_USER, LAST_USER + 1))
    )
    assert "imported 51 user(s)" in run_cli(tmp_path / "daemon0.ini", "user", "import", str(users))
    return sip_port


@pytest.fixture
def run_cli() -> Callable[..., str]:
    from conftest import python_env  # type: ignore[import-not-found]

    def run(config: Path, *args: str) -> str:
        done = subprocess.run(
            ["python3", "-m", "clicktodial.cli", "--config", str(config), *args],
            env=python_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    return run


@pytest.mark.parametrize("force", [False, True], ids=["sanity-check", "force"])
@pytest.mark.parametrize("method", ["REGISTER", "OPTIONS", "INVITE"])
def test_svwar_tells_no_extension_apart(daemon: int, method: str, force: bool) -> None:
    """svwar finds none of the 51 users, whatever method it scans with."""
    argv = [
        "sipvicious_svwar",
        "-m",
        method,
        "-e",
        SCAN,
        "-p",
        str(daemon),
        "--maximumtime",
        "10",
        "127.0.0.1",
    ]
    if force:
        argv.insert(1, "--force")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert "found nothing" in output, output
    # svwar's result table lists found extensions as "| 100 | reqauth |"-style rows.
    assert not re.search(r"^\|\s*1[0-5]\d\s*\|", output, re.M), output


def _ask(sock: socket.socket, sip_port: int, method: str, user: str) -> str:
    call_id = secrets.token_hex(8)
    request = (
        f"{method} sip:{user}@127.0.0.1:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{sock.getsockname()[1]};"
        f"branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:{user}@127.0.0.1:{sock.getsockname()[1]}>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    sock.sendto(request.encode(), ("127.0.0.1", sip_port))
    while True:
        data = sock.recv(65536).decode(errors="replace")
        if f"Call-ID: {call_id}" in data and " 100 " not in data.split("\r\n", 1)[0]:
            return data


def _shape(response: str, user: str) -> list[str]:
    """A response with what varies per request (tags, nonces, branch, ports, the user) masked."""
    masked = []
    for line in response.split("\r\n"):
        line = re.sub(r"(tag|branch|nonce|opaque|rport|received)=\"?[^;,\"\s]*\"?", r"\1=*", line)
        line = re.sub(r"^(Call-ID|Date|Content-Length):.*", r"\1: *", line)
        # The user as a whole number only: a port such as 59941 holds "99" too.
        masked.append(re.sub(rf"(?<!\d){user}(?!\d)", "USER", line))
    return masked


@pytest.mark.parametrize("method", ["REGISTER", "OPTIONS", "INVITE"])
def test_existing_and_unknown_users_get_the_same_answer(daemon: int, method: str) -> None:
    """The answer naming user 100 and the one naming 99 differ in nothing but masked values."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        known = _ask(sock, daemon, method, str(FIRST_USER))
        unknown = _ask(sock, daemon, method, str(FIRST_USER - 1))
    assert _shape(known, str(FIRST_USER)) == _shape(unknown, str(FIRST_USER - 1))
