"""
The web interface in a real browser: Debian's chromium, headless, driven by Playwright.

The daemon runs as a subprocess (SQLite, the demo users alice and bob); both phones are
SIPp UASs answering after a pause, registered with Digest from their own ports. alice logs
in, sees bob come online without reloading, clicks Call, watches the call go through its
states live (server-sent events), hangs up, and finds the call in her history.
Screenshots of each page go to the test's temporary directory; ``scripts/screenshots`` runs
this test to write them to ``docs/screenshots/`` (the committed ones). Every wait is
bounded; every process is killed by PID at the end.
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
    call_states_seen,
    daemon_ini,
    launch_chromium,
    log_in,
    needs_chromium,
    start_sipp_phone,
    watch_call_states,
)
from conftest import (  # type: ignore[import-not-found]
    find_free_port,
)
from screenshots import screenshot_dir  # type: ignore[import-not-found]

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.interop,
    needs_chromium,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) not installed"),
]


@pytest.fixture
def phones(tmp_path: Path, running: list[Any]) -> Callable[[str, int, int], None]:
    """Start a SIPp phone answering after ``delay_ms`` for a user, registered first."""

    def start(user: str, sip_port: int, delay_ms: int) -> None:
        running.append(start_sipp_phone(tmp_path, user, sip_port, delay_ms=delay_ms))

    return start


def shot(directory: Path, page: Any, name: str) -> None:
    page.screenshot(path=str(directory / f"{name}.png"))


def test_alice_calls_bob_from_the_browser_and_watches_it_live(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    phones: Callable[[str, int, int], None],
) -> None:
    shots = screenshot_dir(tmp_path)
    sip_port, web_port = find_free_port(), find_free_port()
    daemon = start_daemon(daemon_ini(sip_port, web_port, str(tmp_path)))
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    base = f"http://127.0.0.1:{web_port}"

    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            # A phone-sized screen: the layout must work there.
            page = browser.new_page(viewport={"width": 390, "height": 760})
            page.set_default_timeout(BROWSER_WAIT_MS)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            failed: list[str] = []
            page.on(
                "response",
                lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )

            page.goto(base + "/directory")
            # the login page, leading back to the page asked for
            assert page.url == base + "/login?next=/directory"
            shot(shots, page, "login")
            log_in(page, base, "alice")
            bob = page.locator('tr[data-user="bob"]')
            assert bob.locator(".presence").inner_text() == "offline"
            assert not bob.locator("button.call").is_visible()
            page.locator('html[data-live="yes"]').wait_for(state="attached")

            # Both phones register; bob's row turns online without a reload.
            phones("alice", sip_port, 1500)
            phones("bob", sip_port, 1500)
            bob.locator(".presence.on").wait_for()
            assert bob.locator("button.call").is_visible()
            shot(shots, page, "directory")

            bob.locator("button.call").click()
            page.wait_for_url(base + "/calls/*")
            page.locator('html[data-live="yes"]').wait_for(state="attached")
            watch_call_states(page)
            page.wait_for_selector('#call[data-state="connected"]')
            seen = call_states_seen(page)
            assert seen[-1] == "connected"
            order = ["calling-caller", "calling-callee", "connected"]
            assert [order.index(state) for state in seen] == sorted(
                order.index(state) for state in seen
            ), seen
            assert page.locator("#hangup").inner_text() == "Hang up"
            shot(shots, page, "call-connected")

            page.click("#hangup")
            page.wait_for_selector('#call[data-state="ended"]')
            assert page.locator("#call-reason").inner_text() == "caller-hangup"
            assert page.locator("#call-duration").inner_text() != ""
            assert not page.locator(".hangup-form").is_visible()
            shot(shots, page, "call-ended")

            call_id = page.url.rsplit("/", 1)[1]
            page.goto(base + "/history")
            assert page.locator(f'tr[data-call-id="{call_id}"]').count() == 1
            shot(shots, page, "history")

            page.set_viewport_size({"width": 900, "height": 760})
            page.goto(base + "/account")
            assert "127.0.0.1" in page.inner_text(".softphone")
            shot(shots, page, "account")
            # The demo users are not administrators.
            assert page.goto(base + "/admin/users").status == 403
            errors = [e for e in errors if "403" not in e]
            assert errors == [], (errors, failed)  # no CSP violation, no script error

            # An administrator (made with the CLI) creates and disables a user.
            add_user(
                tmp_path / "daemon0.ini",
                "root",
                password="root-password",
                admin=True,
                display_name="Administrator",
            )
            admin = browser.new_page(viewport={"width": 900, "height": 760})
            admin.set_default_timeout(BROWSER_WAIT_MS)
            admin.goto(base + "/login")
            log_in(admin, base, "root", "root-password")
            admin.goto(base + "/admin/users")
            admin.fill("input[name=username]", "carol")
            admin.fill("input[name=display_name]", "Carol <Ops>")
            admin.fill("input[name=password]", "carol-password")
            admin.click("text=Create user")
            admin.wait_for_url(base + "/admin/users?done=created")
            assert admin.locator('tr[data-user="carol"]').inner_text().startswith("carol")
            shot(shots, admin, "admin-users")
            admin.click('a[href="/admin/users/carol"]')
            admin.check("input[name=disabled]")
            admin.click("text=Save")
            admin.wait_for_url(base + "/admin/users?done=saved")
            assert "disabled" in admin.locator('tr[data-user="carol"]').inner_text()
        finally:
            browser.close()
    assert daemon.stop() == 0
