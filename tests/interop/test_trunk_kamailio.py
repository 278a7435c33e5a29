"""
A SIP trunk to a real provider: Kamailio (tests/interop/kamailio_provider.cfg, started by
kamailiotools.KamailioProvider) with one digest account and a 10 s registration cap.

- the daemon with ``[trunk:provider]`` registers through the 401 round and refreshes the
  registration (two more accepted REGISTERs within a bounded wait);
- ``/metrics`` and the admin page ``/admin/trunks`` show it registered, and up (OPTIONS);
- a call from the telephone network to our number, which Kamailio sends to the Contact we
  registered (so from the trunk's address), is refused with 403: nothing is routed.

Needs kamailio and sipp; everything on loopback (127.0.0.1 daemon, 127.0.0.20 provider,
127.0.0.30 PSTN phone), inside ``unshare -n``; every wait bounded; processes stopped by PID.
"""

from __future__ import annotations

import http.cookiejar
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calltools import add_user  # type: ignore[import-not-found]
from conftest import (  # type: ignore[import-not-found]
    REPO_ROOT,
    find_free_port,
    stop_process,
    wait_until,
)
from kamailiotools import KamailioProvider

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in ("kamailio", "sipp")),
        reason="needs kamailio and sipp",
    ),
]

PROVIDER = "127.0.0.20"
PSTN = ("127.0.0.30", 5099)
USER, PASSWORD = "4930111", "trunk-secret-1"
TIMEOUT = 30.0


def daemon_ini(
    tmp_path: Path, sip_port: int, web_port: int, metrics_port: int, provider: KamailioProvider
) -> str:
    return (
        f"[sip]\ndomain = 127.0.0.1\nlisten = 127.0.0.1:{sip_port}\ntransports = udp\n"
        f"[web]\nlisten = tcp:{web_port}:interface=127.0.0.1\n"
        f"metrics_listen = tcp:{metrics_port}:interface=127.0.0.1\n"
        f"[store]\nurl = sqlite:///{tmp_path}/clicktodial.sqlite\nauto_upgrade = yes\n"
        "[trunk:provider]\n"
        f"proxy = {provider.proxy_uri}\n"
        f"domain = {provider.realm}\n"
        f"username = {USER}\npassword = {PASSWORD}\n"
        "register = yes\nregister_expires = 60\nkeepalive_interval = 5\n"
    )


def get(
    opener: urllib.request.OpenerDirector, url: str, data: bytes | None = None
) -> tuple[int, bytes]:
    try:
        with opener.open(urllib.request.Request(url, data=data), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metrics(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return get(opener, f"http://127.0.0.1:{port}/metrics")[1].decode()


def admin_page(web_port: int) -> str:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
        NoRedirect(),
    )
    base = f"http://127.0.0.1:{web_port}"
    page = get(opener, base + "/login")[1]
    match = re.search(rb'name="csrf" value="([^"]*)"', page)
    assert match, page
    form = urllib.parse.urlencode(
        {"csrf": match.group(1).decode(), "username": "root", "password": "root-password-1"}
    ).encode()
    assert get(opener, base + "/login", form)[0] == 303
    status, body = get(opener, base + "/admin/trunks")
    assert status == 200, body
    return body.decode()


def test_trunk_registers_refreshes_is_shown_and_refuses_calls_from_the_provider(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
) -> None:
    provider = KamailioProvider(
        tmp_path,
        address=PROVIDER,
        port=5060,
        user=USER,
        password=PASSWORD,
        pstn=PSTN,
        max_expires=10,
    )
    running.append(provider)
    sip_port, web_port, metrics_port = find_free_port(), find_free_port(), find_free_port()
    ini = daemon_ini(tmp_path, sip_port, web_port, metrics_port, provider)
    daemon = start_daemon(ini)
    daemon.wait_for_tcp(web_port)

    # The 401 round, then the registration is saved with our Contact.
    wait_until(
        lambda: len(provider.saved_contacts()) >= 1, TIMEOUT, "the provider to accept our REGISTER"
    )
    assert provider.challenges() >= 1
    assert provider.saved_contacts()[0] == f"<sip:{USER}@127.0.0.1:{sip_port}>"
    # Granted 10 s: refreshed every 5 s (reusing the nonce, so no new challenge needed).
    wait_until(
        lambda: len(provider.saved_contacts()) >= 3, TIMEOUT, "two refreshes of the registration"
    )
    daemon.wait_for_log("trunk provider: registered for 10 s")

    text = metrics(metrics_port)
    assert 'clicktodial_trunk_registered{trunk="provider"} 1.0' in text
    wait_until(
        lambda: 'clicktodial_trunk_up{trunk="provider"} 1.0' in metrics(metrics_port),
        TIMEOUT,
        "the OPTIONS keep-alive to mark the trunk up",
    )

    add_user(
        tmp_path / "daemon0.ini",
        "root",
        password="root-password-1",
        sip_password="root-sip-1",
        admin=True,
    )
    page = admin_page(web_port)
    assert 'data-trunk="provider"' in page
    assert "registration registered" in page and "reachability up" in page

    # A call from the PSTN to our number reaches the daemon from the trunk: 403.
    sipp = subprocess.run(
        [
            "sipp",
            f"{PROVIDER}:5060",
            "-sf",
            str(REPO_ROOT / "tests" / "interop" / "sipp" / "pstn_call_in.xml"),
            "-s",
            USER,
            "-i",
            PSTN[0],
            "-p",
            str(PSTN[1]),
            "-m",
            "1",
            "-timeout",
            "20",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
        ],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert sipp.returncode == 0, (sipp.stdout + sipp.stderr).decode(errors="replace")[-2000:]
    assert "INVITE from the PSTN: to sip:" in provider.output()
    daemon.wait_for_log("refused INVITE from trunk provider")
    assert 'clicktodial_trunk_inbound_refused_total{trunk="provider"} 1.0' in metrics(metrics_port)


@pytest.mark.parametrize("fail_invites", [False, True], ids=["relayed", "503"])
def test_provider_helper_challenges_calls_and_relays_them_to_the_pstn_phone(
    tmp_path: Path,
    running: list[Any],
    fail_invites: bool,
) -> None:
    """The helper the call tests will use: an INVITE is challenged with 407, then relayed
    to the PSTN phone, which sends 183 with SDP and answers; or, with fail_invites, the
    provider answers 503."""
    provider = KamailioProvider(
        tmp_path,
        address=PROVIDER,
        port=5060,
        user=USER,
        password=PASSWORD,
        pstn=PSTN,
        fail_invites=fail_invites,
    )
    running.append(provider)
    scenarios = REPO_ROOT / "tests" / "interop" / "sipp"
    phone = subprocess.Popen(
        [
            "sipp",
            "-sf",
            str(scenarios / "pstn_phone.xml"),
            "-i",
            PSTN[0],
            "-p",
            str(PSTN[1]),
            "-d",
            "300",
            "-m",
            "1",
            "-timeout",
            "25",
            "-timeout_error",
            "-nostdin",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    running.append(Stopper(phone))
    time.sleep(0.5)  # the phone's socket is open (sipp binds at once)
    caller = subprocess.run(
        [
            "sipp",
            f"{PROVIDER}:5060",
            "-sf",
            str(scenarios / "trunk_uac_call.xml"),
            "-s",
            "+4940555001",
            "-au",
            USER,
            "-ap",
            PASSWORD,
            "-i",
            "127.0.0.1",
            "-p",
            str(find_free_port()),
            "-m",
            "1",
            "-timeout",
            "20",
            "-timeout_error",
            "-nostdin",
        ],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert caller.returncode == 0, (caller.stdout + caller.stderr).decode(errors="replace")[-2000:]
    output = provider.output()
    if fail_invites:
        assert "relayed to the PSTN phone" not in output
    else:
        assert "INVITE to sip:+4940555001@provider.test: relayed to the PSTN phone" in output
        assert phone.wait(timeout=15) == 0  # the phone saw its call through to the BYE


class Stopper:
    """A subprocess to stop (by its PID) at the end of a test."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def stop(self) -> None:
        stop_process(self.process)
