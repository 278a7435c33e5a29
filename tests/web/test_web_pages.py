"""The HTML pages, login security and the event stream, through StubTreq on a fake clock."""

import json
import re

import pytest

from clicktodial.config import parse_config
from clicktodial.store.values import UserChanges
from clicktodial.testing.webfakes import WebClient, web_world
from clicktodial.web.app import SoftphoneSettings
from clicktodial.web.sse import format_event


@pytest.fixture
def world():  # type: ignore[no-untyped-def]
    return web_world()


def test_private_pages_redirect_to_login_without_a_session(world) -> None:
    client = WebClient(world)
    for path in ["/directory", "/history", "/account", "/admin/users", "/calls/abc"]:
        reply = client.get(path)
        assert (reply.code, reply.headers["location"]) == (303, "/login?next=" + path), path


def test_every_page_carries_the_security_headers(world) -> None:
    client = WebClient(world)
    client.login("alice")
    for path in ["/login", "/directory", "/history", "/account", "/admin/users"]:
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["cache-control"] == "no-store"


def test_login_sets_a_fresh_httponly_samesite_strict_session_cookie(world) -> None:
    client = WebClient(world)
    client.cookies["clicktodial_session"] = "chosen-by-attacker"
    token = client.csrf("/login")
    reply = client.request(
        "POST", "/login", form={"csrf": token, "username": "alice", "password": "alice-pass"}
    )
    assert (reply.code, reply.headers["location"]) == (303, "/directory")
    cookie = reply.headers["set-cookie"]
    assert "clicktodial_session=" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # plain HTTP here; Secure is set under TLS
    assert client.cookies["clicktodial_session"] != "chosen-by-attacker"
    assert client.get("/directory").code == 200


def test_unknown_user_and_wrong_password_get_the_same_answer(world) -> None:
    one, two = WebClient(world), WebClient(world)
    a = one.login("alice", "wrong")
    b = two.login("mallory", "wrong")
    assert a.code == b.code == 401
    strip = re.compile(rb'value="[^"]*"')
    assert strip.sub(b"", a.body).replace(b"alice", b"X") == strip.sub(b"", b.body).replace(
        b"mallory", b"X"
    )


def test_login_without_the_form_token_is_refused(world) -> None:
    client = WebClient(world)
    reply = client.request("POST", "/login", form={"username": "alice", "password": "alice-pass"})
    assert reply.code == 403
    assert "clicktodial_session" not in client.cookies


def test_repeated_login_failures_are_throttled_per_account_then_refused(world) -> None:
    client = WebClient(world)
    for _ in range(10):
        client.login("bob", "wrong")
    reply = client.login("bob", "bob-pass")
    assert reply.code == 429
    assert "retry-after" in reply.headers
    world.clock.advance(301)
    assert client.login("bob", "bob-pass").code == 303


def test_forms_without_the_session_csrf_token_are_refused(world) -> None:
    world.register("alice")
    world.register("bob")
    client = WebClient(world)
    client.login("alice")
    for path, fields in [
        ("/calls", {"callee": "bob"}),
        ("/logout", {}),
        ("/account/sip-secret", {}),
        ("/admin/users", {"username": "dave"}),
    ]:
        reply = client.request("POST", path, form={"csrf": "forged", **fields})
        assert reply.code == 403, path
    assert world.controller.calls == {}
    assert world.store.get_user("dave").result is None


def test_directory_shows_presence_and_call_buttons_only_for_reachable_users(world) -> None:
    world.register("bob")
    client = WebClient(world)
    client.login("alice")
    page = client.get("/directory").text
    bob = re.search(r'<tr data-user="bob">.*?</tr>', page).group(0)
    carol = re.search(r'<tr data-user="carol">.*?</tr>', page).group(0)
    me = re.search(r'<tr data-user="alice">.*?</tr>', page).group(0)
    assert "presence on" in bob and 'name="callee" value="bob"' in bob
    assert 'hidden="hidden"' not in bob
    assert "presence off" in carol and 'hidden="hidden"' in carol
    assert "Call" not in me


def test_html_is_escaped(world) -> None:
    world.store.update_user("bob", UserChanges(display_name="<script>x</script>"))
    client = WebClient(world)
    client.login("alice")
    page = client.get("/directory").text
    assert "<script>x" not in page and "&lt;script&gt;x" in page


def test_click_to_call_then_the_call_page_then_hang_up(world) -> None:
    world.register("alice")
    world.register("bob")
    client = WebClient(world)
    client.login("alice")
    reply = client.post_form("/calls", {"callee": "bob"})
    assert reply.code == 303
    location = reply.headers["location"]
    call_id = location.rsplit("/", 1)[1]
    page = client.get(location).text
    assert 'data-state="calling-caller"' in page and "Cancel" in page
    assert '<noscript><meta http-equiv="refresh"' in page
    world.controller.advance(call_id, "calling-callee")
    world.controller.advance(call_id, "connected")
    page = client.get(location).text
    assert 'data-state="connected"' in page and "Hang up" in page
    reply = client.post_form(f"/calls/{call_id}/hangup", {}, csrf_from=location)
    assert reply.code == 303
    page = client.get(location).text
    assert 'data-state="ended"' in page and "caller-hangup" in page
    history = client.get("/history").text
    assert call_id in history and "to bob" in history


def test_calling_without_a_registered_phone_explains_on_the_directory(world) -> None:
    world.register("bob")
    client = WebClient(world)
    client.login("alice")
    reply = client.post_form("/calls", {"callee": "bob"})
    assert reply.code == 409 and "not registered" in reply.text


def test_account_shows_softphone_settings_and_a_new_sip_secret_once(world) -> None:
    client = WebClient(world)
    client.login("bob")
    page = client.get("/account").text
    for text in ["127.0.0.1", "5060", "UDP, TCP", "example.test", "sip:bob@example.test"]:
        assert text in page
    reply = client.post_form("/account/sip-secret", {}, csrf_from="/account")
    secret = re.search(r'<code id="sip-secret">([^<]+)</code>', reply.text).group(1)
    assert reply.headers["cache-control"] == "no-store"
    assert 'id="sip-secret"' not in client.get("/account").text
    import hashlib

    expected = hashlib.md5(f"bob:example.test:{secret}".encode()).hexdigest()
    assert world.store.get_sip_credentials("bob").result.ha1_md5 == expected
    assert len(secret) >= 16


def _softphone_rows(page: str) -> dict[str, str]:
    section = page[page.index('class="details softphone"') :]
    section = section[: section.index("</dl>")]
    return dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]*)</dd>", section))


def test_account_tells_a_phone_everything_it_needs_to_authenticate(world) -> None:
    """Besides address and server, the page names the Digest username, realm and algorithms
    (a phone that knows none of the algorithms offered cannot register)."""
    client = WebClient(world)
    client.login("bob")
    rows = _softphone_rows(client.get("/account").text)
    assert rows == {
        "Address": "sip:bob@example.test",
        "Server": "127.0.0.1",
        "Port": "5060",
        "Transport": "UDP, TCP",
        "Username": "bob",
        "Domain": "example.test",
        "Authentication username": "bob",
        "Realm": "example.test",
        "Digest algorithm": "SHA-256 or MD5",
    }


def test_softphone_settings_come_from_sip_and_registrar_configuration() -> None:
    """The server is the listen address (the domain when listening on every address, an IPv6
    one bracketed); TLS has its own port; the algorithms are the registrar's, in order."""
    base = "[sip]\ndomain = pbx.example.test\n[web]\nlisten = tcp:8080\n[store]\nbackend = memory\n"
    dev = SoftphoneSettings.from_config(
        parse_config(
            base.replace("test\n", "test\nlisten = 127.0.0.2:5070\n", 1)
            + "[registrar]\ndigest_algorithms = MD5\n",
            "x.ini",
        )
    )
    assert (dev.server, dev.port, dev.transports, dev.tls_port) == (
        "127.0.0.2",
        5070,
        ("udp", "tcp"),
        None,
    )
    assert (dev.realm, dev.digest_algorithms) == ("pbx.example.test", ("MD5",))
    everywhere = SoftphoneSettings.from_config(
        parse_config(base.replace("test\n", "test\nlisten = 0.0.0.0:5060\n", 1), "x.ini")
    )
    assert everywhere.server == "pbx.example.test"
    assert everywhere.digest_algorithms == ("SHA-256", "MD5")
    ipv6 = SoftphoneSettings.from_config(
        parse_config(base.replace("test\n", "test\nlisten = [::1]:5060\n", 1), "x.ini")
    )
    assert ipv6.server == "[::1]"


def test_account_with_tls_shows_its_port(world) -> None:
    world.app.softphone = SoftphoneSettings(
        "127.0.0.1", 5060, ("udp", "tls"), "example.test", ("MD5",), tls_port=5061
    )
    client = WebClient(world)
    client.login("bob")
    rows = _softphone_rows(client.get("/account").text)
    assert (rows["Port"], rows["TLS port"], rows["Transport"]) == ("5060", "5061", "UDP, TLS")
    assert rows["Digest algorithm"] == "MD5"


def test_changing_the_password_checks_the_current_one_and_renews_the_session(world) -> None:
    client = WebClient(world)
    client.login("bob")
    old_cookie = client.cookies["clicktodial_session"]
    form = {"current": "wrong", "new": "new-password-1", "confirm": "new-password-1"}
    assert client.post_form("/account/password", form, csrf_from="/account").code == 403
    form["current"] = "bob-pass"
    reply = client.post_form("/account/password", form, csrf_from="/account")
    assert reply.code == 303
    assert client.cookies["clicktodial_session"] != old_cookie
    assert world.store.check_password("bob", "new-password-1").result is not None


def test_admin_pages_are_for_admins_only(world) -> None:
    client = WebClient(world)
    client.login("bob")
    assert client.get("/admin/users").code == 403
    assert (
        client.request(
            "POST",
            "/admin/users/carol/remove",
            form={"csrf": client.csrf("/directory"), "confirm": "yes"},
        ).code
        == 403
    )


def test_admin_creates_edits_disables_and_removes_a_user(world) -> None:
    admin = WebClient(world)
    admin.login("alice")
    reply = admin.post_form(
        "/admin/users",
        {"username": "dave", "display_name": "Dave", "password": "dave-password"},
        csrf_from="/admin/users",
    )
    assert reply.code == 303
    assert world.store.get_user("dave").result.display_name == "Dave"
    dave = WebClient(world)
    assert dave.login("dave", "dave-password").code == 303
    reply = admin.post_form(
        "/admin/users/dave",
        {"display_name": "David", "disabled": "yes"},
        csrf_from="/admin/users/dave",
    )
    assert reply.code == 303
    assert world.store.get_user("dave").result.disabled
    assert dave.get("/directory").code == 303  # logged out
    assert (
        admin.post_form("/admin/users", {"username": "dave"}, csrf_from="/admin/users").code == 409
    )
    assert (
        admin.post_form("/admin/users", {"username": "Bad Name"}, csrf_from="/admin/users").code
        == 400
    )
    reply = admin.post_form(
        "/admin/users/dave/remove", {"confirm": "yes"}, csrf_from="/admin/users/dave"
    )
    assert reply.code == 303
    assert world.store.get_user("dave").result is None
    assert admin.get("/admin/users/dave").code == 404


def test_sessions_expire_after_an_idle_hour(world) -> None:
    client = WebClient(world)
    client.login("bob")
    world.clock.advance(3601)
    assert client.get("/directory").code == 303


def test_event_stream_frames_call_and_registration_events(world) -> None:
    world.register("alice")
    world.register("bob")
    client = WebClient(world)
    client.login("alice")
    watcher = WebClient(world)
    watcher.login("alice")
    reply = watcher.get("/api/v1/events", stream=True)
    assert reply.code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert watcher.streamed().startswith(b"retry: 3000\n\n")
    world.clock.advance(2.1)  # the monitor's first read establishes the state
    call_id = client.post_form("/calls", {"callee": "bob"}).headers["location"].rsplit("/")[-1]
    world.controller.advance(call_id, "calling-callee")
    world.register("carol")
    for _ in range(25):
        world.clock.advance(0.1)
    events = [block for block in watcher.streamed().split(b"\n\n") if block.startswith(b"event")]
    kinds = [block.split(b"\n")[0] for block in events]
    assert kinds == [b"event: call", b"event: call", b"event: registration"]
    first = events[0].split(b"\n")
    assert first[1] == b"id: 1"
    assert json.loads(first[2][len(b"data: ") :])["state"] == "calling-caller"
    registration = json.loads(events[2].split(b"\n")[2][len(b"data: ") :])
    assert registration["username"] == "carol" and registration["registered"] is True
    world.clock.advance(15)
    assert watcher.streamed().endswith(b": keepalive\n\n")


def test_event_streams_only_carry_my_calls(world) -> None:
    world.register("bob")
    carol = WebClient(world)
    carol.login("carol")
    carol.get("/api/v1/events", stream=True)
    bob = WebClient(world)
    bob.login("bob")
    bob.post_form("/calls", {"callee": "alice"})
    assert b"event: call" not in carol.streamed()


def test_too_many_event_streams_per_user_is_429(world) -> None:
    client = WebClient(world)
    client.login("bob")
    for _ in range(8):
        assert client.get("/api/v1/events", stream=True).code == 200
    assert client.get("/api/v1/events", stream=True).code == 429


def test_format_event_puts_json_on_one_data_line() -> None:
    assert format_event("call", {"a": "x\ny"}, 3) == b'event: call\nid: 3\ndata: {"a":"x\\ny"}\n\n'
    with pytest.raises(ValueError):
        format_event("bad\nname", {})


def test_static_files_are_served_without_external_assets(world) -> None:
    client = WebClient(world)
    css = client.get("/static/style.css")
    js = client.get("/static/app.js")
    assert css.code == js.code == 200
    for body in (css.text, js.text):
        assert "http://" not in body and "https://" not in body


def test_the_registration_monitor_reads_the_store_only_while_someone_listens(world) -> None:
    monitor = world.app.registrations
    client = WebClient(world)
    client.login("bob")
    assert world.clock.getDelayedCalls() == []
    client.get("/api/v1/events", stream=True)
    assert monitor.listening == 1
    client.stub.flush()
    # Closing the connection unsubscribes: no timer is left behind.
    for request in list(world.app._subscribers):
        request.stream.close()
    assert monitor.listening == 0
    assert world.clock.getDelayedCalls() == []


def test_removing_a_user_removes_their_bindings_from_the_location_backend() -> None:
    """With registrations in a [location] backend of their own, an administrator removing a
    user removes that user's phones from it (not from the store, which has none)."""
    from clicktodial.store.memory import MemoryStore
    from clicktodial.store.values import BindingChanges, ContactChange
    from clicktodial.testing.fakes import InlineReactor, InlineThreadPool

    locations = MemoryStore(InlineReactor(), realm="example.com", hash_pool=InlineThreadPool())
    locations.start()
    world = web_world(locations=locations)
    aor = "sip:carol@" + world.app.domain
    now = world.clock.seconds()
    locations.update_bindings(
        aor, BindingChanges("c", 1, (ContactChange("sip:carol@192.0.2.3", 600),)), now
    )
    admin = WebClient(world)
    admin.login("alice")
    reply = admin.post_form(
        "/admin/users/carol/remove", {"confirm": "yes"}, csrf_from="/admin/users/carol"
    )
    assert reply.code == 303
    assert locations.get_bindings(aor, now).result == []
