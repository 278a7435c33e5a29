"""
A call's SIP ladder in a real browser (issue 19): Debian's chromium, headless, driven by
Playwright, against the daemon as a subprocess (SQLite) with SIPp phones.

alice calls bob twice from the web page on a phone-sized screen: the first time bob's SIPp
phone answers 486 Busy Here, the second time it answers. Each time the call page shows the
ladder (arrows between alice's phone, the daemon and bob's phone, live), and the reason in
plain words above it; an administrator downloads the pcap, alice may not (403), and carol
(another user) gets 403 for the page and the trace. The screenshots
``docs/screenshots/call-trace-failed.png`` and ``call-trace-connected.png`` come from this
test, run by ``scripts/screenshots`` (otherwise they go to the test's temporary directory).
Every wait is bounded; every process is killed by PID at the end.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calltools import (  # type: ignore[import-not-found]
    BROWSER_WAIT_MS,
    add_user,
    daemon_ini,
    launch_chromium,
    log_in,
    needs_chromium,
    register_status,
    start_sipp_phone,
)
from conftest import (  # type: ignore[import-not-found]
    find_free_port,
)
from screenshots import screenshot_dir  # type: ignore[import-not-found]

PCAP_MAGIC = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.interop,
    needs_chromium,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) not installed"),
]


@pytest.fixture
def phones(tmp_path: Path, running: list[Any]) -> Callable[..., int]:
    """Start a SIPp phone (a scenario, -d pause, -m calls) for a user, registered first;
    returns its port."""

    def start(user: str, sip_port: int, scenario: str, delay_ms: int, calls: int = 1) -> int:
        phone = start_sipp_phone(
            tmp_path, user, sip_port, scenario, delay_ms=delay_ms, calls=calls, timeout=90
        )
        running.append(phone)
        return int(phone.port)

    return start


def shot(directory: Path, page: Any, name: str) -> None:
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


def arrows(page: Any) -> list[tuple[str, str]]:
    """(the arrow's classes, its label) for each message on the ladder."""
    return [
        (str(a[0]), str(a[1]))
        for a in page.evaluate("""() =>
        Array.from(document.querySelectorAll('#ladder li.msg summary')).map(
            s => [s.className, s.querySelector('.label').textContent])""")
    ]


def labels_between(found: list[tuple[str, str]], source: str, target: str) -> list[str]:
    return [label for classes, label in found if f"from-{source} to-{target}" in classes]


def wait_for_arrow(page: Any, source: str, target: str, label: str, count: int = 1) -> None:
    """
    Until the ladder shows ``count`` arrows from ``source`` to ``target`` whose label starts
    with ``label``: it grows live, message by message, and a message sent in answer to
    another (an ACK, a BYE after a 486) may come after the one the test waited for.
    """
    page.wait_for_function(
        """([selector, label, count]) => Array.from(document.querySelectorAll(selector))
            .filter(l => l.textContent.startsWith(label)).length >= count""",
        arg=[f"#ladder summary.from-{source}.to-{target} .label", label, count],
    )


def call_from_directory(page: Any, base: str) -> str:
    page.goto(base + "/directory")
    bob = page.locator('tr[data-user="bob"]')
    bob.locator(".presence.on").wait_for()
    bob.locator("button.call").click()
    page.wait_for_url(base + "/calls/*")
    page.locator('html[data-live="yes"]').wait_for(state="attached")
    return str(page.url.rsplit("/", 1)[1])


def test_the_call_page_shows_the_sip_ladder_and_why_the_call_failed(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    phones: Callable[..., int],
) -> None:
    shots = screenshot_dir(tmp_path)
    sip_port, web_port = find_free_port(), find_free_port()
    daemon = start_daemon(daemon_ini(sip_port, web_port, str(tmp_path)))
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    base = f"http://127.0.0.1:{web_port}"
    ini = tmp_path / "daemon0.ini"
    add_user(ini, "root", password="root-password", admin=True)
    add_user(ini, "carol", password="carol-password")

    # alice's phone answers both calls; bob's first phone is busy (486), his second answers.
    phones("alice", sip_port, "call_phone_answer.xml", 300, 2)
    busy_port = phones("bob", sip_port, "call_phone_busy.xml", 300)

    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.set_default_timeout(BROWSER_WAIT_MS)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(base + "/login")
            log_in(page, base, "alice")

            # 1. bob is busy: the call fails; the ladder shows his 486 and the reason.
            failed_id = call_from_directory(page, base)
            page.wait_for_selector('#call[data-state="failed"]')
            reason = page.locator("#trace-reason")
            reason.wait_for(state="visible")
            assert reason.inner_text() == "Bob's phone answered 486 Busy Here"
            wait_for_arrow(page, "callee", "daemon", "486 Busy Here")
            wait_for_arrow(page, "daemon", "callee", "ACK")
            wait_for_arrow(page, "daemon", "caller", "BYE")
            found = arrows(page)
            assert labels_between(found, "daemon", "callee")[0] == "INVITE"
            assert "486 Busy Here" in labels_between(found, "callee", "daemon")
            assert "ACK" in labels_between(found, "daemon", "callee")
            assert labels_between(found, "daemon", "caller")[0] == "INVITE"
            assert "200 OK" in labels_between(found, "caller", "daemon")
            assert "BYE" in labels_between(found, "daemon", "caller")
            # Tapping the 486 shows the whole message.
            busy = page.locator(
                "#ladder summary.from-callee.to-daemon", has_text="486 Busy Here"
            ).first
            busy.click()
            message = busy.locator("xpath=..").locator("pre.sip")
            assert message.inner_text().startswith("SIP/2.0 486 Busy Here")
            shot(shots, page, "call-trace-failed")

            # The same trace as text, from the API, for a ticket.
            text = page.request.get(f"{base}/api/v1/calls/{failed_id}/trace?format=text")
            assert text.status == 200 and "SIP/2.0 486 Busy Here" in text.text()

            # 2. bob's next phone answers: the call connects; the ladder grows live.
            # (from another port: the busy phone's SIPp may still hold its own)
            status, text = register_status(
                "bob",
                "bob",
                find_free_port(),
                sip_port,
                expires=0,
                contacts=[f"<sip:bob@127.0.0.1:{busy_port}>"],
            )
            assert status == 200, text
            phones("bob", sip_port, "call_phone_answer.xml", 300)
            connected_id = call_from_directory(page, base)
            page.wait_for_selector('#call[data-state="connected"]')
            wait_for_arrow(page, "callee", "daemon", "200 OK")
            wait_for_arrow(page, "daemon", "callee", "ACK")
            wait_for_arrow(page, "daemon", "caller", "INVITE", count=2)  # the re-INVITE
            found = arrows(page)
            assert labels_between(found, "daemon", "callee")[0] == "INVITE"
            assert "ACK" in labels_between(found, "daemon", "callee")
            assert "INVITE" in labels_between(found, "daemon", "caller")[1:]  # the re-INVITE
            assert not page.locator("#trace-reason").is_visible()
            shot(shots, page, "call-trace-connected")
            page.click("#hangup")
            page.wait_for_selector('#call[data-state="ended"]')
            page.wait_for_function(
                "() => document.getElementById('trace-reason').textContent === 'You hung up'"
            )

            # alice may not download the pcap; an administrator may.
            assert page.request.get(f"{base}/api/v1/calls/{failed_id}/trace.pcap").status == 403
            assert errors == [], errors  # no CSP violation, no script error

            admin = browser.new_page(viewport={"width": 900, "height": 760})
            admin.set_default_timeout(BROWSER_WAIT_MS)
            admin.goto(base + "/login")
            log_in(admin, base, "root", "root-password")
            admin.goto(f"{base}/calls/{failed_id}")
            assert (
                admin.locator("#trace-reason").inner_text() == "Bob's phone answered 486 Busy Here"
            )
            with admin.expect_download() as download:
                admin.click("#trace-pcap")
            pcap = Path(download.value.path()).read_bytes()
            assert pcap[:4] in PCAP_MAGIC
            assert b"SIP/2.0 486 Busy Here" in pcap

            # carol is neither caller, callee nor admin: 403 for the page and the trace.
            other = browser.new_page(viewport={"width": 390, "height": 844})
            other.set_default_timeout(BROWSER_WAIT_MS)
            other.goto(base + "/login")
            log_in(other, base, "carol", "carol-password")
            for call_id in (failed_id, connected_id):
                assert other.goto(f"{base}/calls/{call_id}").status == 403
                assert other.locator("#ladder").count() == 0
                assert other.request.get(f"{base}/api/v1/calls/{call_id}/trace").status == 403
        finally:
            browser.close()
    assert daemon.stop() == 0
