"""
Calling numbers from the web (docs/dialplan.md): POST /api/v1/calls {"number": ...}, the
directory's number field and the /dial confirmation page of phone links, through a real
Site (StubTreq) on a memory store and a fake clock.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from clicktodial.config import parse_config
from clicktodial.dialplan.dialler import Dialler
from clicktodial.interfaces import IOutboundQuota
from clicktodial.testing.webfakes import DOMAIN, WebClient, WebWorld, web_world
from clicktodial.web.pages import safe_next

DIALPLAN = """[sip]
domain = {domain}
[dialplan]
country_code = 44
daily_limit = 3
routes =
    +447 mobile backup
    +44 uk_main uk_backup
    + world
user_classes =
    carol national mobile international
"""


def dial_world(section: str = DIALPLAN) -> WebWorld:
    world = web_world()
    plan = parse_config(section.format(domain=DOMAIN), "x.ini").dialplan.plan()
    world.app.dialler = Dialler(
        world.clock, plan, world.store, world.store, IOutboundQuota(world.store, None), DOMAIN
    )
    for name in ("alice", "bob", "carol"):
        world.register(name)
    return world


@pytest.fixture
def world() -> WebWorld:
    return dial_world()


def api(world: WebWorld, username: str = "bob") -> tuple[WebClient, dict[str, str]]:
    token = world.store.create_token(username).result
    return WebClient(world), {"Authorization": f"Bearer {token}"}


def call_number(world: WebWorld, number: object, username: str = "bob"):  # type: ignore[no-untyped-def]
    client, auth = api(world, username)
    return client.request("POST", "/api/v1/calls", json_body={"number": number}, headers=auth)


def test_a_national_number_goes_to_the_controller_with_the_decision(world: WebWorld) -> None:
    reply = call_number(world, "020 7946 0958")
    assert reply.code == 201
    call = reply.json()
    assert (call["callee"], call["number"], call["destination_class"]) == (
        "+442079460958",
        "+442079460958",
        "national",
    )
    [(caller, decision)] = world.controller.outbound
    assert caller == "bob" and decision.trunks == ("uk_main", "uk_backup")
    record = world.store.get_call(call["id"]).result
    assert (record.number, record.trunk) == ("+442079460958", "uk_main")


def test_a_number_of_a_directory_user_places_the_normal_call(world: WebWorld) -> None:
    """A user name or a sip: address of our domain given as number calls that user."""
    for number in ("alice", f"sip:alice@{DOMAIN}"):
        reply = call_number(world, number)
        assert reply.code == 201
        assert reply.json()["callee"] == "alice" and "number" not in reply.json()
    assert world.controller.outbound == []


def test_a_refused_class_is_403_with_the_reason_and_recorded_without_sip(world: WebWorld) -> None:
    reply = call_number(world, "+33 1 23 45 67 89")
    assert reply.code == 403
    assert reply.json() == {"error": "+33123456789: international numbers are not allowed for bob"}
    assert world.controller.outbound == []
    [record] = world.store.list_calls("bob").result
    assert (
        record.callee,
        record.number,
        record.destination_class,
        record.end_reason,
        record.refusal,
        record.public_state,
    ) == (
        "+33123456789",
        "+33123456789",
        "international",
        "refused",
        "+33123456789: international numbers are not allowed for bob",
        "failed",
    )
    client, auth = api(world)
    listed = client.get("/api/v1/calls", headers=auth).json()["calls"][0]
    assert listed["refusal"] == record.refusal and listed["reason"] == "refused"


def test_a_user_allowed_international_calls_abroad(world: WebWorld) -> None:
    reply = call_number(world, "0033 1 23 45 67 89", "carol")
    assert reply.code == 201
    assert world.controller.outbound[0][1].trunks == ("world",)


def test_premium_numbers_are_refused_and_emergency_numbers_are_too(world: WebWorld) -> None:
    assert call_number(world, "0909 879 0000").code == 403
    reply = call_number(world, "999")
    assert reply.code == 403 and "emergency number" in reply.json()["error"]
    records = world.store.list_calls("bob").result
    assert {r.destination_class for r in records} == {"premium", "emergency"}
    assert world.controller.outbound == []


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"number": "Bob Smith"}, 400, "not a telephone number"),
        ({"number": "nobody"}, 400, "no user nobody"),
        ({"number": 44}, 400, "must be a string"),
        ({"number": "+44 20", "callee": "alice"}, 400, "not both"),
        ({"number": "javascript:alert(1)"}, 400, "only tel: and sip:"),
    ],
)
def test_garbage_is_400_and_not_recorded(
    world: WebWorld, body: dict[str, object], status: int, words: str
) -> None:
    client, auth = api(world)
    reply = client.request("POST", "/api/v1/calls", json_body=body, headers=auth)
    assert reply.code == status and words in reply.json()["error"]
    assert world.store.list_calls("bob").result == []


def test_the_daily_limit_refuses_the_call_past_it_and_a_new_utc_day_resets_it(
    world: WebWorld,
) -> None:
    for _ in range(3):
        assert call_number(world, "+442079460958").code == 201
    reply = call_number(world, "+442079460958")
    assert reply.code == 403 and "3 calls to numbers allowed a day" in reply.json()["error"]
    refused = [r for r in world.store.list_calls("bob").result if r.end_reason == "refused"]
    assert [r.refusal for r in refused] == [reply.json()["error"]]
    assert len(world.controller.outbound) == 3
    assert call_number(world, "+442079460958", "carol").code == 201
    world.clock.advance(86_400)
    world.register("bob")
    assert call_number(world, "+442079460958").code == 201


def test_a_call_that_reached_no_trunk_gives_its_daily_count_back(world: WebWorld) -> None:
    """The controller's refund (no INVITE reached a trunk) frees the place (docs/dialplan.md)."""
    for _ in range(3):
        assert call_number(world, "+442079460958").code == 201
    assert call_number(world, "+442079460958").code == 403
    refund = world.controller.refunds[0]
    assert refund is not None
    refund()
    refund()  # once
    assert world.store.outbound_calls("bob", "2023-11-14").result == 2
    assert call_number(world, "+442079460958").code == 201
    assert call_number(world, "+442079460958").code == 403


def test_a_call_the_controller_refuses_is_not_counted(world: WebWorld) -> None:
    world.controller.refuse = "no-outbound"
    assert call_number(world, "+442079460958").code == 403
    assert world.store.outbound_calls("bob", "2023-11-14").result == 0


def test_local_calls_do_not_count_against_the_daily_limit(world: WebWorld) -> None:
    for _ in range(4):
        assert call_number(world, "alice").code == 201
    assert call_number(world, "+442079460958").code == 201


def test_without_a_dial_plan_numbers_are_refused_names_still_work() -> None:
    world = dial_world("[sip]\ndomain = {domain}\n")
    reply = call_number(world, "+442079460958")
    assert reply.code == 403 and "not configured" in reply.json()["error"]
    assert call_number(world, "alice").code == 201
    assert world.store.list_calls("bob").result[0].callee == "alice"


def test_an_unregistered_caller_is_409_and_nothing_is_counted(world: WebWorld) -> None:
    world.clock.advance(1)
    world.register("bob", expires=0)
    assert call_number(world, "+442079460958").code == 409
    assert world.store.outbound_calls("bob", "2023-11-14").result == 0


# -- pages -------------------------------------------------------------------------------


def logged_in(world: WebWorld, username: str = "bob") -> WebClient:
    client = WebClient(world)
    assert client.login(username).code == 303
    return client


def test_the_directory_has_a_number_field_and_the_phone_links_offer(world: WebWorld) -> None:
    page = logged_in(world).get("/directory").text
    assert 'id="dial-form"' in page and 'name="number"' in page
    assert 'id="register-handlers"' in page and 'data-template="/dial?uri=%s"' in page


def test_calling_a_number_from_the_directory_opens_the_call_page(world: WebWorld) -> None:
    client = logged_in(world)
    reply = client.post_form("/calls", {"number": "07700 900123"})
    assert reply.code == 303
    page = client.get(reply.headers["location"]).text
    assert "+447700900123" in page and 'id="call-class">mobile' in page
    assert 'id="call-trunk">mobile' in page


def test_a_refused_number_is_explained_on_the_directory(world: WebWorld) -> None:
    client = logged_in(world)
    reply = client.post_form("/calls", {"number": "+1 876 555 1234"})
    assert reply.code == 403
    assert "+18765551234: international numbers are not allowed for bob" in reply.text
    history = client.get("/history").text
    assert "to +18765551234" in history and "international" in history
    assert "not allowed for bob" in history


def test_dial_page_shows_number_and_class_and_places_nothing(world: WebWorld) -> None:
    client = logged_in(world)
    reply = client.get("/dial?uri=" + quote("tel:+44-20-7946-0958", safe=""))
    assert reply.code == 200
    assert 'id="dial-number">+442079460958<' in reply.text
    assert 'id="dial-class">national<' in reply.text
    assert world.controller.outbound == [] and world.store.list_calls("bob").result == []
    form = re.search(r'<form[^>]*id="confirm-form".*?</form>', reply.text, re.S)
    assert form and 'name="csrf"' in form.group(0)
    assert 'name="number" value="+442079460958"' in form.group(0)


def test_dial_page_confirmation_places_the_call(world: WebWorld) -> None:
    client = logged_in(world)
    reply = client.post_form(
        "/calls", {"number": "+442079460958"}, csrf_from="/dial?uri=tel%3A%2B442079460958"
    )
    assert reply.code == 303 and reply.headers["location"].startswith("/calls/")
    assert len(world.controller.outbound) == 1


def test_dial_page_confirmation_without_the_csrf_token_is_refused(world: WebWorld) -> None:
    client = logged_in(world)
    reply = client.request("POST", "/calls", form={"number": "+442079460958", "csrf": "forged"})
    assert reply.code == 403
    assert world.controller.outbound == []


def test_dial_page_of_a_refused_or_bad_link_says_why_without_a_call_button(world: WebWorld) -> None:
    client = logged_in(world)
    reply = client.get("/dial?uri=" + quote("tel:+33123456789", safe=""))
    assert reply.code == 403 and "not allowed for bob" in reply.text
    assert 'id="confirm-form"' not in reply.text
    reply = client.get("/dial?uri=" + quote("tel:<script>", safe=""))
    assert reply.code == 400 and "<script>" not in reply.text
    assert world.store.list_calls("bob").result == []


def test_dial_page_of_a_directory_address_offers_the_local_call(world: WebWorld) -> None:
    client = logged_in(world)
    reply = client.get("/dial?uri=" + quote(f"sip:alice@{DOMAIN}", safe=""))
    assert 'id="dial-number">alice<' in reply.text and "local" in reply.text


def test_dial_page_needs_a_login_and_the_login_leads_back_to_it(world: WebWorld) -> None:
    """A phone link clicked while logged out: after logging in, its confirmation page."""
    client = WebClient(world)
    asked = "/dial?uri=" + quote("tel:+44-20-7946-0958", safe="")
    reply = client.get(asked)
    assert reply.code == 303
    login = reply.headers["location"]
    assert login == "/login?next=" + quote(asked, safe="/")
    page = client.get(login).text
    assert f'name="next" value="{asked}"' in page
    token = re.search(r'name="csrf" value="([^"]*)"', page).group(1)  # type: ignore[union-attr]
    form = {"csrf": token, "username": "bob", "password": "bob-pass", "next": asked}
    reply = client.request("POST", "/login", form=form)
    assert (reply.code, reply.headers["location"]) == (303, asked)
    reply = client.get(asked)
    assert reply.code == 200 and 'id="dial-number">+442079460958<' in reply.text
    assert world.controller.outbound == []  # still only the confirmation page


def test_a_failed_login_keeps_where_it_leads(world: WebWorld) -> None:
    client = WebClient(world)
    token = client.csrf("/login?next=%2Fhistory")
    form = {"csrf": token, "username": "bob", "password": "wrong", "next": "/history"}
    reply = client.request("POST", "/login", form=form)
    assert reply.code == 401 and 'name="next" value="/history"' in reply.text


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/dial",
        "//evil.example/dial",
        r"/\evil.example/dial",
        r"\\evil.example",
        "http:/evil.example",
        "javascript:alert(1)",
        "/\tevil",
        "/ evil",
        "/\r\nSet-Cookie: x=1",
        "evil.example",
        "/login",
        "/logout",
        "",
    ],
)
def test_the_login_refuses_to_lead_off_site_or_anywhere_odd(world: WebWorld, target: str) -> None:
    """No open redirect: an absolute, other-host or odd ``next`` goes to the directory."""
    client = WebClient(world)
    page = client.get("/login?next=" + quote(target, safe="")).text
    assert 'name="next"' not in page
    token = re.search(r'name="csrf" value="([^"]*)"', page).group(1)  # type: ignore[union-attr]
    form = {"csrf": token, "username": "bob", "password": "bob-pass", "next": target}
    reply = client.request("POST", "/login", form=form)
    assert (reply.code, reply.headers["location"]) == (303, "/directory")


def test_a_next_page_of_ours_is_kept_percent_escaped() -> None:
    assert safe_next("/dial?uri=tel%3A%2B44#frag") == "/dial?uri=tel%3A%2B44"
    assert safe_next("/history?page=2") == "/history?page=2"
    assert safe_next("/caf\u00e9") == "/caf%C3%A9"
    assert safe_next("/x" * 2000) is None


def test_a_link_from_another_site_hops_once_same_site_to_get_the_strict_cookie(
    world: WebWorld,
) -> None:
    """
    SameSite=Strict withholds the session from a navigation started by another site (the
    tel: link's page): the answer is a same-site hop to the same page, not the login.
    """
    client = logged_in(world)
    asked = "/dial?uri=" + quote("tel:+442079460958", safe="")
    # What the browser sends cross-site: no cookie of ours.
    reply = WebClient(world).get(asked, headers={"Sec-Fetch-Site": "cross-site"})
    assert reply.code == 200
    assert f'http-equiv="refresh" content="0;url={asked}"' in reply.text
    assert f'href="{asked}"' in reply.text
    # The hop is same-site: the cookie comes along.
    reply = client.get(asked, headers={"Sec-Fetch-Site": "same-origin"})
    assert reply.code == 200 and 'id="dial-number">+442079460958<' in reply.text
    # Logged out for real: the hop's request leads to the login, with the page kept.
    reply = WebClient(world).get(asked, headers={"Sec-Fetch-Site": "same-origin"})
    assert (reply.code, reply.headers["location"]) == (303, "/login?next=" + quote(asked, safe="/"))
