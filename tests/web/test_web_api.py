"""The JSON API /api/v1 through a real Site (StubTreq), on a memory store and a fake clock."""

import json
import re
from importlib.resources import files

import pytest

from clicktodial.testing.webfakes import WebClient, web_world
from clicktodial.web.api import ApiResource


@pytest.fixture
def world():  # type: ignore[no-untyped-def]
    return web_world()


def token_client(world, username="alice"):  # type: ignore[no-untyped-def]
    client = WebClient(world)
    token = world.store.create_token(username).result
    return client, {"Authorization": f"Bearer {token}"}


def test_every_api_route_needs_authentication_and_answers_401_json(world) -> None:
    client = WebClient(world)
    for method, path in [
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/calls"),
        ("POST", "/api/v1/calls"),
        ("GET", "/api/v1/calls/abc"),
        ("DELETE", "/api/v1/calls/abc"),
        ("GET", "/api/v1/events"),
    ]:
        reply = client.request(method, path)
        assert reply.code == 401, (method, path)
        assert "error" in reply.json()
        assert reply.headers["www-authenticate"].startswith("Bearer")


def test_a_bad_token_is_401(world) -> None:
    client = WebClient(world)
    reply = client.get("/api/v1/me", headers={"Authorization": "Bearer nope"})
    assert reply.code == 401
    reply = client.get("/api/v1/me", headers={"Authorization": "Basic abc"})
    assert reply.code == 401


def test_users_lists_everyone_with_registration_state(world) -> None:
    world.register("bob", expires=600)
    client, auth = token_client(world)
    reply = client.get("/api/v1/users", headers=auth)
    assert reply.code == 200
    assert reply.headers["cache-control"] == "no-store"
    users = {u["username"]: u for u in reply.json()}
    assert users["bob"]["registered"] is True
    assert users["bob"]["contacts"] == [{"uri": "sip:bob@127.0.0.1:5070", "expires": 600}]
    assert users["carol"] == {
        "username": "carol",
        "display_name": "Carol",
        "registered": False,
        "phones": 0,
        "contacts": [],
    }


def test_me_names_the_token_owner_without_csrf_token(world) -> None:
    client, auth = token_client(world, "bob")
    me = client.get("/api/v1/me", headers=auth).json()
    assert me["username"] == "bob" and me["is_admin"] is False
    assert "csrf_token" not in me


def test_place_call_answers_201_with_location_and_call(world) -> None:
    world.register("alice")
    world.register("bob")
    client, auth = token_client(world)
    reply = client.request("POST", "/api/v1/calls", json_body={"callee": "bob"}, headers=auth)
    assert reply.code == 201
    call = reply.json()
    assert call["state"] == "calling-caller"
    assert (call["caller"], call["callee"]) == ("alice", "bob")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", call["created"])
    assert reply.headers["location"] == f"/api/v1/calls/{call['id']}"
    got = client.get(reply.headers["location"], headers=auth).json()
    assert got["id"] == call["id"] and got["state"] == "calling-caller"


@pytest.mark.parametrize(
    "body, status",
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'{"callee": 5}', 400),
        (b'{"callee": "Bob Smith"}', 400),
        (b'{"callee": "bob", "extra": 1}', 400),
        (b'{"callee": "nobody"}', 404),
        (b'{"callee": "bob", "caller": "carol"}', 403),
        (b'{"callee": "' + b"x" * 70000 + b'"}', 413),
    ],
)
def test_place_call_rejects_bad_requests(world, body: bytes, status: int) -> None:
    world.register("alice")
    client, auth = token_client(world)
    reply = client.request(
        "POST", "/api/v1/calls", data=body, headers={**auth, "Content-Type": "application/json"}
    )
    assert reply.code == status
    assert isinstance(reply.json()["error"], str)


def test_place_call_without_a_registered_phone_is_409(world) -> None:
    world.register("bob")
    client, auth = token_client(world)
    reply = client.request("POST", "/api/v1/calls", json_body={"callee": "bob"}, headers=auth)
    assert reply.code == 409
    assert "not registered" in reply.json()["error"]


def test_policy_refusal_is_403(world) -> None:
    world.register("alice")
    world.controller.refuse = "forbidden"
    client, auth = token_client(world)
    reply = client.request("POST", "/api/v1/calls", json_body={"callee": "bob"}, headers=auth)
    assert reply.code == 403


def test_too_many_calls_per_minute_is_429_with_retry_after(world) -> None:
    world.register("alice")
    client, auth = token_client(world)
    for _ in range(10):
        reply = client.request("POST", "/api/v1/calls", json_body={"callee": "bob"}, headers=auth)
        assert reply.code == 201
    reply = client.request("POST", "/api/v1/calls", json_body={"callee": "bob"}, headers=auth)
    assert reply.code == 429
    assert int(reply.headers["retry-after"]) >= 1
    world.clock.advance(61)
    reply = client.request("POST", "/api/v1/calls", json_body={"callee": "bob"}, headers=auth)
    assert reply.code == 201


def test_a_user_sees_and_ends_only_their_own_calls_admins_any(world) -> None:
    world.register("bob")
    world.register("carol")
    bob, bob_auth = token_client(world, "bob")
    call = bob.request(
        "POST", "/api/v1/calls", json_body={"callee": "alice"}, headers=bob_auth
    ).json()
    carol, carol_auth = token_client(world, "carol")
    assert carol.get(f"/api/v1/calls/{call['id']}", headers=carol_auth).code == 403
    assert carol.request("DELETE", f"/api/v1/calls/{call['id']}", headers=carol_auth).code == 403
    admin, admin_auth = token_client(world, "alice")
    assert admin.get(f"/api/v1/calls/{call['id']}", headers=admin_auth).code == 200
    ended = bob.request("DELETE", f"/api/v1/calls/{call['id']}", headers=bob_auth)
    assert ended.code == 200
    assert ended.json()["state"] == "failed" and ended.json()["reason"] == "cancelled"
    assert world.controller.hung_up == [(call["id"], "bob")]
    again = bob.request("DELETE", f"/api/v1/calls/{call['id']}", headers=bob_auth)
    assert again.code == 409


def test_unknown_call_is_404(world) -> None:
    client, auth = token_client(world)
    assert client.get("/api/v1/calls/0123abcd", headers=auth).code == 404
    assert client.get("/api/v1/calls/not-hex!", headers=auth).code == 404
    assert client.request("DELETE", "/api/v1/calls/0123abcd", headers=auth).code == 404


def test_a_finished_call_shows_answered_ended_duration_and_reason(world) -> None:
    world.register("alice")
    client, auth = token_client(world)
    call = client.request("POST", "/api/v1/calls", json_body={"callee": "bob"}, headers=auth).json()
    world.clock.advance(3)
    world.controller.advance(call["id"], "calling-callee")
    world.clock.advance(2)
    world.controller.advance(call["id"], "connected")
    world.clock.advance(42)
    world.controller.advance(call["id"], "ended", "callee-hangup", 200)
    got = client.get(f"/api/v1/calls/{call['id']}", headers=auth).json()
    assert got["state"] == "ended"
    assert got["reason"] == "callee-hangup" and got["sip_status"] == 200
    assert got["duration"] == 42.0
    assert "answered" in got and "ended_at" in got


def test_history_is_mine_newest_first_and_paginated(world) -> None:
    world.register("alice")
    world.register("bob")
    alice, alice_auth = token_client(world)
    ids = []
    for callee in ["bob", "carol", "bob"]:
        ids.append(
            alice.request(
                "POST", "/api/v1/calls", json_body={"callee": callee}, headers=alice_auth
            ).json()["id"]
        )
        world.clock.advance(1)
    bob, bob_auth = token_client(world, "bob")
    bob.request("POST", "/api/v1/calls", json_body={"callee": "carol"}, headers=bob_auth)
    page = alice.get("/api/v1/calls?limit=2", headers=alice_auth).json()
    assert [c["id"] for c in page["calls"]] == [ids[2], ids[1]]
    assert page["next"] == "/api/v1/calls?limit=2&offset=2"
    page = alice.get(page["next"], headers=alice_auth).json()
    assert [c["id"] for c in page["calls"]] == [ids[0]]
    assert page["next"] is None
    assert alice.get("/api/v1/calls?limit=0", headers=alice_auth).code == 400
    assert alice.get("/api/v1/calls?offset=x", headers=alice_auth).code == 400


def test_session_cookie_needs_csrf_header_to_change_state(world) -> None:
    world.register("alice")
    client = WebClient(world)
    client.login("alice")
    assert client.get("/api/v1/me").code == 200
    reply = client.request("POST", "/api/v1/calls", json_body={"callee": "bob"})
    assert reply.code == 403 and "CSRF" in reply.json()["error"]
    reply = client.request(
        "POST", "/api/v1/calls", json_body={"callee": "bob"}, headers={"X-CSRF-Token": "wrong"}
    )
    assert reply.code == 403
    reply = client.request(
        "POST",
        "/api/v1/calls",
        json_body={"callee": "bob"},
        headers={"X-CSRF-Token": client.api_csrf()},
    )
    assert reply.code == 201


def test_unknown_paths_are_404_and_wrong_methods_405_in_json(world) -> None:
    client, auth = token_client(world)
    assert client.get("/api/v1/nothing", headers=auth).code == 404
    reply = client.request("PUT", "/api/v1/calls", headers=auth)
    assert reply.code == 405 and "GET" in reply.headers["allow"]
    assert reply.json() == {"error": "method not allowed"}


def test_without_a_call_controller_calls_are_503(world) -> None:
    world.app.controller = None
    world.register("alice")
    client, auth = token_client(world)
    reply = client.request("POST", "/api/v1/calls", json_body={"callee": "bob"}, headers=auth)
    assert reply.code == 503


def test_openapi_document_lists_exactly_the_implemented_routes(world) -> None:
    client = WebClient(world)
    reply = client.get("/api/v1/openapi.json")
    assert reply.code == 200
    spec = reply.json()
    assert spec == json.loads(files("clicktodial.web").joinpath("openapi.json").read_text())
    documented = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    implemented = {
        (route.method, route.path.replace("{call_id}", "{call_id}"))
        for route in ApiResource(world.app).routes()
    }
    assert documented == implemented


def test_openapi_documents_every_status_the_api_answers(world) -> None:
    """Each (route, status) this suite provokes is in the document."""
    spec = WebClient(world).get("/api/v1/openapi.json").json()
    seen = {
        ("/calls", "post"): {201, 400, 401, 403, 404, 409, 413, 429, 503},
        ("/calls", "get"): {200, 400, 401},
        ("/calls/{call_id}", "get"): {200, 401, 403, 404},
        ("/calls/{call_id}", "delete"): {200, 401, 403, 404, 409},
        ("/users", "get"): {200, 401},
        ("/me", "get"): {200, 401},
        ("/events", "get"): {200, 401, 429},
    }
    for (path, method), statuses in seen.items():
        documented = {int(s) for s in spec["paths"][path][method]["responses"]}
        assert statuses <= documented, (path, method, statuses - documented)
