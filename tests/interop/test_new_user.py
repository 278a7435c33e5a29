"""
The daemon tried as a new user would: the README's run command with ``conf/dev.ini``, log in
as the demo user, register a softphone with nothing but what the account page says, call.

``conf/dev.ini`` is used as shipped except for its ports (free loopback ports instead of 5060
and 8080) and its log file; its SQLite database is ``./var/`` under the test's directory, where
twistd runs. Headless chromium (Playwright) logs in as alice and as bob, reads the softphone
settings off each one's account page (server, port, transport, username, domain,
authentication) and generates a SIP password there; each baresip's account is written from
exactly those values, nothing else. alice sees bob come online in the directory, clicks Call,
her phone rings and is answered (over baresip's control socket, as a user picking up); bob's
phone answers by itself, and the call page shows the states up to "connected".
Screenshots go to the test's temporary directory (``docs/screenshots/new-user/`` when
``scripts/screenshots`` runs it). Every wait is bounded; every process is
stopped by its PID.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from calltools import (
    BROWSER_WAIT_MS,
    Baresip,
    call_states_seen,
    launch_chromium,
    log_in,
    needs_baresip,
    needs_chromium,
    watch_call_states,
)
from conftest import REPO_ROOT, find_free_port  # type: ignore[import-not-found]
from screenshots import screenshot_dir  # type: ignore[import-not-found]

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.interop,
    needs_chromium,
    needs_baresip,
]


def dev_ini(sip_port: int, web_port: int, log_path: Path) -> str:
    """``conf/dev.ini`` with free ports and a log file: every replaced line must be there."""
    text = (REPO_ROOT / "conf" / "dev.ini").read_text()
    replacements = {
        "listen = 127.0.0.1:5060\n": f"listen = 127.0.0.1:{sip_port}\n",
        "listen = tcp:8080:interface=127.0.0.1\n": f"listen = tcp:{web_port}:interface=127.0.0.1\n",
        "file = -\n": f"file = {log_path}\n",
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"conf/dev.ini no longer has {old!r}: update this test"
        text = text.replace(old, new)
    assert "url = sqlite:///var/clicktodial.sqlite" in text  # relative: under the test's dir
    return text


def account_line(settings: dict[str, str], secret: str, answermode: str, which: int) -> str:
    """
    A baresip ``accounts`` line from the page's settings: the address (AOR) from username and
    domain, the registrar as outbound proxy from server, port and the ``which``-th transport
    listed, the authentication username and the SIP password.
    """
    transport = settings["Transport"].split(",")[which].strip().lower()
    assert transport in ("udp", "tcp"), settings
    # An IPv6 server is shown bracketed already, as in a SIP URI.
    proxy = f"sip:{settings['Server']}:{settings['Port']};transport={transport}"
    return (
        f"<sip:{settings['Username']}@{settings['Domain']}>;"
        f"auth_user={settings['Authentication username']};auth_pass={secret};"
        f'outbound="{proxy}";regint=600;answermode={answermode};audio_codecs=PCMU\n'
    )


def shot(directory: Path, page: Any, name: str) -> None:
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


def softphone(
    tmp_path: Path, settings: dict[str, str], secret: str, answermode: str, transport: int
) -> Baresip:
    """A baresip configured from an account page's settings and SIP password alone."""
    name = settings["Username"]
    return Baresip(
        tmp_path / f"baresip-{name}",
        name,
        account_line(settings, secret, answermode, transport),
        control=True,
    )


def softphone_settings(shots: Path, page: Any, base: str, name: str) -> tuple[dict[str, str], str]:
    """Open the account page, generate a SIP password, read every setting shown."""
    page.click('a[href="/account"]')
    page.wait_for_url(base + "/account")
    page.click("text=Generate a new SIP password")
    page.locator("#sip-secret").wait_for()
    secret = page.inner_text("#sip-secret").strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{20}", secret), secret
    settings: dict[str, str] = page.evaluate("""() => {
        const out = {};
        for (const dt of document.querySelectorAll('.softphone dt'))
            out[dt.textContent.trim()] = dt.nextElementSibling.textContent.trim();
        return out;
    }""")
    shot(shots, page, f"account-{name}")
    return settings, secret


def test_a_new_user_registers_a_softphone_from_the_account_page_and_places_a_call(
    tmp_path: Path,
    start_daemon: Any,
    running: list[Baresip],
) -> None:
    shots = screenshot_dir(tmp_path, "new-user")
    sip_port, web_port = find_free_port(), find_free_port()
    daemon = start_daemon(dev_ini(sip_port, web_port, tmp_path / "daemon0.log"))
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    assert (tmp_path / "var" / "clicktodial.sqlite").exists()
    base = f"http://127.0.0.1:{web_port}"

    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            pages = {}
            for name in ("alice", "bob"):
                context = browser.new_context(viewport={"width": 900, "height": 900})
                page = context.new_page()
                page.set_default_timeout(BROWSER_WAIT_MS)
                page.goto(base + "/")
                page.wait_for_url(base + "/login")
                log_in(page, base, name)  # README: the demo users' password = username
                pages[name] = page
            alice_page = pages["alice"]
            errors: list[str] = []
            alice_page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            settings = {}
            for name, page in pages.items():
                settings[name] = softphone_settings(shots, page, base, name)
            shown, _ = settings["alice"]
            assert shown["Username"] == "alice"
            assert shown["Port"] == str(sip_port)
            # What a softphone cannot guess must be on the page: dev.ini offers MD5 only.
            assert shown["Authentication username"] == "alice"
            assert shown["Realm"] == shown["Domain"]
            assert "MD5" in shown["Digest algorithm"]

            alice_page.goto(base + "/directory")
            alice_page.locator('html[data-live="yes"]').wait_for(state="attached")
            bob_row = alice_page.locator('tr[data-user="bob"]')
            assert bob_row.locator(".presence").inner_text() == "offline"

            # alice's phone uses the first transport listed (UDP), bob's the last (TCP).
            alice = softphone(tmp_path, *settings["alice"], answermode="manual", transport=0)
            bob = softphone(tmp_path, *settings["bob"], answermode="auto", transport=-1)
            running.extend([alice, bob])
            alice.wait_for_output("{0/UDP/v4} 200 OK")
            bob.wait_for_output("{0/TCP/v4} 200 OK")
            # bob comes online in alice's directory without a reload.
            bob_row.locator(".presence.on").wait_for()
            alice_page.locator('tr[data-user="alice"] .presence.on').wait_for()
            shot(shots, alice_page, "directory")

            bob_row.locator("button.call").click()
            alice_page.wait_for_url(base + "/calls/*")
            alice_page.locator('html[data-live="yes"]').wait_for(state="attached")
            watch_call_states(alice_page)
            # alice's own phone rings first; she picks it up.
            alice.wait_for_output("Incoming call", 30)
            assert alice_page.locator("#call").get_attribute("data-state") == "calling-caller"
            shot(shots, alice_page, "call-ringing-me")
            alice.command("accept")
            alice_page.wait_for_selector('#call[data-state="connected"]')
            seen = call_states_seen(alice_page)
            assert seen == ["calling-caller", "calling-callee", "connected"], seen
            bob.wait_for_output("Call established", 30)
            shot(shots, alice_page, "call-connected")

            alice_page.click("#hangup")
            alice_page.wait_for_selector('#call[data-state="ended"]')
            assert alice_page.locator("#call-reason").inner_text() == "caller-hangup"
            # Both phones get the BYE (baresip 1.0: "session closed: Connection reset by peer").
            for phone in (alice, bob):
                phone.wait_for_output("session closed", 30)
            shot(shots, alice_page, "call-ended")
            assert errors == [], errors
        finally:
            browser.close()
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()
