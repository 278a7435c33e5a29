"""
Phone links of any web page, in a real browser (headless Debian chromium, Playwright):
clicktodial offers to handle tel: and sip: links (navigator.registerProtocolHandler), a
link leads to the /dial confirmation page (number, class, Call button; nothing is placed
by the GET), and the call is placed once confirmed (docs/dialplan.md).

Headless chromium has no prompt to accept a protocol handler, so a click on a tel: link
does not reach us by itself: the test follows the link as the browser would once the
handler is accepted, by opening the handler's URL template with the link's URI
substituted for %s (escaped, as the HTML standard's registerProtocolHandler says).

A second case dials through a real trunk: after confirmation, the tel: link's call rings
alice's baresip, which answers, and goes out through a Kamailio provider
(tests/interop/kamailiotools.py) to its PSTN phone (SIPp), where it rings, then connects.

With CLICKTODIAL_SCREENSHOTS=1 the confirmation page is saved as
docs/screenshots/dial-confirm.png (the command is in docs/dialplan.md); otherwise no file
is written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from calltools import (  # type: ignore[import-not-found]
    BROWSER_WAIT_MS,
    DOMAIN,
    SIPP_SCENARIOS,
    api_token,
    daemon_ini,
    demo_phone,
    launch_chromium,
    log_in,
    needs_baresip,
    needs_chromium,
    register,
    sipp_argv,
    watched_page,
    web_api_get,
)
from conftest import (  # type: ignore[import-not-found]
    REPO_ROOT,
    find_free_port,
    stop_process,
    wait_until,
)
from kamailiotools import KamailioProvider

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.interop, needs_chromium]

DIALPLAN = """[dialplan]
country_code = 44
routes =
    +44 uk_main uk_backup
"""

LINKS = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Contacts</title></head>
<body><h1>Some company's contact page</h1>
<p>London office: <a id="london" href="tel:+44-20-7946-0958">020 7946 0958</a></p>
<p>Paris office: <a id="paris" href="tel:+33-1-23-45-67-89">+33 1 23 45 67 89</a></p>
<p>Bob: <a id="bob" href="sip:bob@{DOMAIN}">bob</a></p>
</body></html>
"""


def follow_phone_link(page: Any, base: str, link: str) -> None:
    """Open the page with the phone links, and follow ``link`` as the handler would."""
    href = page.locator(link).get_attribute("href")
    page.goto(base + "/dial?uri=" + quote(href, safe=""))


def test_a_tel_link_leads_to_the_confirmation_page_and_the_call_after_confirming(
    tmp_path: Path, start_daemon: Any
) -> None:
    sip_port, web_port = find_free_port(), find_free_port()
    ini = daemon_ini(sip_port, web_port, str(tmp_path)) + DIALPLAN
    daemon = start_daemon(ini)
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    base = f"http://127.0.0.1:{web_port}"
    # alice's phone is registered (calls need it) but nothing answers: calls stay ringing.
    register("alice", "alice", find_free_port(), sip_port)
    register("bob", "bob", find_free_port(), sip_port)
    links = tmp_path / "contacts.html"
    links.write_text(LINKS)

    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page, errors = watched_page(browser, 390, 760, BROWSER_WAIT_MS)
            page.goto(base + "/login")
            log_in(page, base, "alice")

            # 127.0.0.1 is a secure context: the offer shows, and registering does not throw.
            offer = page.locator("#phone-links")
            offer.wait_for(state="visible")
            page.click("#register-handlers")
            page.wait_for_function(
                "document.getElementById('register-result').textContent.length > 0"
            )
            assert page.inner_text("#register-result").startswith(
                "Asked your browser to open tel: and sip: links here"
            ), page.inner_text("#register-result")

            # A tel: link of another page: the confirmation page, and no call yet.
            page.goto(links.as_uri())
            follow_phone_link(page, base, "#london")
            assert page.inner_text("#dial-number") == "+442079460958"
            assert page.inner_text("#dial-class") == "national"
            if os.environ.get("CLICKTODIAL_SCREENSHOTS"):
                page.screenshot(path=str(REPO_ROOT / "docs" / "screenshots" / "dial-confirm.png"))
            token = api_token(tmp_path / "daemon0.ini", "alice")
            assert web_api_get(web_port, token, "/calls")["calls"] == []

            # Confirmed: placed through the dial plan; no trunk exists yet, so it fails as
            # no-trunk, recorded with its number and class.
            page.click("#confirm-call")
            page.wait_for_url(base + "/calls/*")
            page.wait_for_selector('#call[data-state="failed"]')
            assert page.inner_text("#call-number") == "+442079460958"
            assert page.inner_text("#call-class") == "national"
            assert page.inner_text("#call-reason") == "no-trunk"

            # An international link is refused on the confirmation page, with its reason,
            # and nothing can be confirmed.
            page.goto(links.as_uri())
            follow_phone_link(page, base, "#paris")
            assert "international numbers are not allowed for alice" in page.inner_text(".error")
            assert page.locator("#confirm-form").count() == 0

            # A sip: link of a directory user: the confirmation page, then the usual call.
            page.goto(links.as_uri())
            follow_phone_link(page, base, "#bob")
            assert page.inner_text("#dial-number") == "bob"
            page.click("#confirm-call")
            page.wait_for_url(base + "/calls/*")
            assert page.locator("#call").get_attribute("data-state") in (
                "calling-caller",
                "calling-callee",
            )
            page.click("#hangup")
            page.wait_for_selector('#call[data-state="failed"]')

            calls = web_api_get(web_port, token, "/calls")["calls"]
            assert [(c["callee"], c.get("number"), c.get("reason")) for c in calls] == [
                ("bob", None, "cancelled"),
                ("+442079460958", "+442079460958", "no-trunk"),
            ]
            assert [e for e in errors if "403" not in e] == []
        finally:
            browser.close()
    assert daemon.stop() == 0


def test_a_tel_link_followed_logged_out_leads_to_its_confirmation_after_login(
    tmp_path: Path, start_daemon: Any
) -> None:
    """
    A phone link clicked on another site's page while logged out: the login page, then the
    link's confirmation page (a same-site ``next``); logged in, the same click comes straight
    to the confirmation page although the session cookie is SameSite=Strict; an off-site
    ``next`` is refused (docs/dialplan.md).
    """
    sip_port, web_port = find_free_port(), find_free_port()
    ini = daemon_ini(sip_port, web_port, str(tmp_path)) + DIALPLAN
    daemon = start_daemon(ini)
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    base = f"http://127.0.0.1:{web_port}"
    handler = base + "/dial?uri=" + quote("tel:+44-20-7946-0958", safe="")
    # The URL the browser opens for the tel: link once the handler is accepted, as a link
    # of another site's page (file://: a cross-site navigation, as the real one is).
    links = tmp_path / "links.html"
    links.write_text(
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>x</title></head>'
        f'<body><a id="london" href="{handler}">020 7946 0958</a></body></html>'
    )

    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page, errors = watched_page(browser, 390, 760, BROWSER_WAIT_MS)
            page.goto(links.as_uri())
            page.click("#london")
            page.wait_for_url(lambda url: url.startswith(base + "/login?next="))
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", "alice")
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: url == handler)
            assert page.inner_text("#dial-number") == "+442079460958"
            assert page.inner_text("#dial-class") == "national"
            token = api_token(tmp_path / "daemon0.ini", "alice")
            assert web_api_get(web_port, token, "/calls")["calls"] == []  # nothing placed

            # Logged in: the cross-site click arrives without the Strict cookie, hops once
            # on our own page and shows the confirmation page, no login asked.
            page.goto(links.as_uri())
            page.click("#london")
            page.wait_for_selector("#dial-number")
            assert page.url == handler
            assert page.inner_text("#dial-number") == "+442079460958"

            # An off-site next is refused: the login leads to the directory.
            other = browser.new_page()
            other.set_default_timeout(BROWSER_WAIT_MS)
            other.goto(base + "/login?next=" + quote("https://example.invalid/x", safe=""))
            assert other.locator("input[name=next]").count() == 0
            log_in(other, base, "bob")  # waits for /directory
            assert [e for e in errors if "403" not in e] == []
        finally:
            browser.close()
    assert daemon.stop() == 0


@needs_baresip
@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("kamailio", "sipp")),
    reason="needs kamailio and sipp",
)
def test_a_confirmed_tel_link_call_goes_out_through_the_trunk_to_the_far_end(
    tmp_path: Path, start_daemon: Any, running: list[Any]
) -> None:
    pstn = ("127.0.0.30", find_free_port())
    provider = KamailioProvider(
        tmp_path,
        address="127.0.0.20",
        port=5060,
        user="4930111",
        password="trunk-secret-1",
        pstn=pstn,
    )
    running.append(provider)
    # The far end: rings (183) for 3 s, then answers; ends at the BYE.
    far_end = subprocess.Popen(
        sipp_argv(SIPP_SCENARIOS / "pstn_phone.xml", pstn[0], pstn[1], delay_ms=3000),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    sip_port, web_port = find_free_port(), find_free_port()
    ini = (
        f"[sip]\ndomain = {DOMAIN}\nlisten = 127.0.0.1:{sip_port}\n"
        f"[web]\nlisten = tcp:{web_port}:interface=127.0.0.1\n"
        f"[store]\nurl = sqlite:///{tmp_path}/clicktodial.sqlite\nauto_upgrade = yes\n"
        "demo_users = yes\n[registrar]\ndigest_algorithms = MD5\n"
        "[dialplan]\ncountry_code = 44\nroutes =\n    +44 uk_main\n"
        f"[trunk:uk_main]\nproxy = {provider.proxy_uri}\ndomain = {provider.realm}\n"
        "username = 4930111\npassword = trunk-secret-1\nregister = no\n"
    )
    daemon = start_daemon(ini)
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    alice = demo_phone(tmp_path, "alice", sip_port, "auto")
    running.append(alice)
    daemon.wait_for_log("REGISTER sip:alice@127.0.0.1: 1 binding(s)")
    base = f"http://127.0.0.1:{web_port}"
    links = tmp_path / "contacts.html"
    links.write_text(LINKS)
    try:
        with playwright_sync.sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                page, errors = watched_page(browser, 390, 760, BROWSER_WAIT_MS)
                page.goto(base + "/login")
                log_in(page, base, "alice")
                page.goto(links.as_uri())
                follow_phone_link(page, base, "#london")
                page.click("#confirm-call")
                page.wait_for_url(base + "/calls/*")
                # alice answered; the number rings at the far end behind the provider.
                wait_until(
                    lambda: "relayed to the PSTN phone" in provider.output(),
                    30,
                    "the INVITE to reach the far end through the provider",
                )
                page.wait_for_selector('#call[data-state="connected"]')
                assert page.inner_text("#call-number") == "+442079460958"
                time.sleep(1)
                page.click("#hangup")
                page.wait_for_selector('#call[data-state="ended"]')
                assert far_end.wait(timeout=30) == 0  # the far end got its BYE
                token = api_token(tmp_path / "daemon0.ini", "alice")
                [call] = web_api_get(web_port, token, "/calls")["calls"]
                assert (call["trunk"], call["number"], call["state"]) == (
                    "uk_main",
                    "+442079460958",
                    "ended",
                )
                assert [e for e in errors if "403" not in e] == []
            finally:
                browser.close()
    finally:
        stop_process(far_end)
