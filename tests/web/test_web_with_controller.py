"""
The API and event stream on the real call controller: the daemon's UA core and fake phones
on one in-memory network (``CallWorld``), a fake clock, StubTreq.
"""

import json

from twisted.internet.defer import Deferred

from clicktodial.store.values import BindingChanges, ContactChange, user_aor
from clicktodial.testing.callfakes import DOMAIN, CallWorld, HeldCallRecords
from clicktodial.testing.fakes import success_result_of
from clicktodial.testing.uafakes import Answer, sdp
from clicktodial.testing.webfakes import WebClient, WebWorld
from clicktodial.web.app import Principal, SoftphoneSettings, WebApp
from clicktodial.web.events import RegistrationMonitor
from clicktodial.web.http import HTTPError


def make() -> tuple[CallWorld, WebClient, dict[str, str]]:
    calls = CallWorld()
    calls.phone("alice", "127.0.0.2", answer=Answer(delay=1.0, sdp=sdp("alice")))
    calls.phone("bob", "127.0.0.3", answer=Answer(delay=2.0, sdp=sdp("bob")))
    monitor = RegistrationMonitor(calls.clock, calls.store, DOMAIN, interval=2.0)
    app = WebApp(
        calls.clock,
        calls.store,
        calls.controller,
        monitor,
        SoftphoneSettings("127.0.0.1", 5060, ("udp",), DOMAIN),
    )
    world = WebWorld(calls.clock, calls.store, calls.controller, app)  # type: ignore[arg-type]
    client = WebClient(world)
    token = calls.store.create_token("alice").result
    return calls, client, {"Authorization": f"Bearer {token}"}


def events_of(stream: bytes, kind: bytes) -> list[dict]:  # type: ignore[type-arg]
    found = []
    for block in stream.split(b"\n\n"):
        lines = block.split(b"\n")
        if lines[0] == b"event: " + kind:
            found.append(json.loads(lines[-1][len(b"data: ") :]))
    return found


def test_a_call_placed_through_the_api_streams_every_state_until_hung_up() -> None:
    calls, client, auth = make()
    watcher = WebClient(client.world)
    watcher.get("/api/v1/events", headers=auth, stream=True)
    reply = client.request("POST", "/api/v1/calls", json_body={"callee": "bob"}, headers=auth)
    assert reply.code == 201
    call_id = reply.json()["id"]
    calls.run(5)
    assert client.get(f"/api/v1/calls/{call_id}", headers=auth).json()["state"] == "connected"
    calls.run(10)
    reply = client.request("DELETE", f"/api/v1/calls/{call_id}", headers=auth)
    assert reply.code == 200
    calls.run(5)
    states = [e["state"] for e in events_of(watcher.streamed(), b"call")]
    assert states == ["calling-caller", "calling-callee", "connected", "ended"]
    final = client.get(f"/api/v1/calls/{call_id}", headers=auth).json()
    assert final["state"] == "ended" and final["reason"] == "caller-hangup"
    # connected about 3 s after the click (1 s + 2 s of ringing), hung up at 15 s
    assert 11 <= final["duration"] <= 12
    history = client.get("/api/v1/calls", headers=auth).json()["calls"]
    assert [c["id"] for c in history] == [call_id]


def test_cancelling_while_the_callers_phone_rings_fails_the_call() -> None:
    calls, client, auth = make()
    call_id = client.request(
        "POST", "/api/v1/calls", json_body={"callee": "bob"}, headers=auth
    ).json()["id"]
    calls.run(0.3)
    assert client.request("DELETE", f"/api/v1/calls/{call_id}", headers=auth).code == 200
    calls.run(5)
    final = client.get(f"/api/v1/calls/{call_id}", headers=auth).json()
    assert final["state"] == "failed" and final["reason"] == "cancelled"
    assert "duration" not in final


def test_registration_changes_reach_the_stream_including_expiry() -> None:
    calls, client, auth = make()
    client.get("/api/v1/events", headers=auth, stream=True)
    calls.run(2.5)  # the first read establishes the state
    calls.user("carol")
    calls.store.update_bindings(
        user_aor("carol", DOMAIN),
        BindingChanges(call_id="c1", cseq=1, contacts=(ContactChange("sip:carol@h", 10),)),
        calls.clock.seconds(),
    )
    calls.run(3)
    calls.run(12)  # carol's binding expires
    changes = [
        (e["username"], e["registered"]) for e in events_of(client.streamed(), b"registration")
    ]
    assert changes == [("carol", True), ("carol", False)]


def admin_auth(calls: CallWorld) -> dict[str, str]:
    calls.user("ops", is_admin=True)
    token = calls.store.create_token("ops").result
    return {"Authorization": f"Bearer {token}"}


def test_an_admin_batch_places_every_call_with_one_result_each_in_order() -> None:
    calls, client, _ = make()
    calls.user("carol")  # no phone
    auth = admin_auth(calls)
    reply = client.request(
        "POST",
        "/api/v1/calls",
        headers=auth,
        json_body={
            "calls": [
                {"caller": "alice", "callee": "bob"},
                {"caller": "nobody", "callee": "bob"},
                {"caller": "carol", "callee": "bob"},
                {"caller": "alice", "callee": "alice"},
            ]
        },
    )
    assert reply.code == 200
    results = reply.json()["calls"]
    assert [r["status"] for r in results] == [201, 404, 409, 403]
    assert results[0]["call"]["caller"] == "alice"
    assert results[2]["error"] == "carol's phone is not registered"
    calls.run(5)
    active = client.get("/api/v1/calls?active=true", headers=auth).json()["calls"]
    assert [(c["id"], c["state"]) for c in active] == [(results[0]["call"]["id"], "connected")]
    call_id = results[0]["call"]["id"]
    assert client.request("DELETE", f"/api/v1/calls/{call_id}", headers=auth).code == 200
    calls.run(5)
    assert client.get("/api/v1/calls?active=true", headers=auth).json()["calls"] == []
    final = client.get(f"/api/v1/calls/{call_id}", headers=auth).json()
    assert (final["state"], final["reason"], final["who_hung_up"]) == (
        "ended",
        "cancelled",
        "system",
    )
    calls.assert_quiescent()


def test_a_batch_is_for_administrators_only() -> None:
    calls, client, alice = make()
    reply = client.request(
        "POST",
        "/api/v1/calls",
        headers=alice,
        json_body={"calls": [{"caller": "alice", "callee": "bob"}]},
    )
    assert reply.code == 403
    assert calls.controller.active_calls() == []


def test_a_batch_is_bounded_by_max_batch_calls_and_must_hold_call_objects() -> None:
    calls, client, _ = make()
    auth = admin_auth(calls)
    limit = client.world.app.limits.max_batch_calls
    too_many = {"calls": [{"caller": "alice", "callee": "bob"}] * (limit + 1)}
    reply = client.request("POST", "/api/v1/calls", headers=auth, json_body=too_many)
    assert reply.code == 400 and "max_batch_calls" in reply.json()["error"]
    for bad in (
        {"calls": ["alice"]},
        {"calls": [{"caller": "alice"}]},
        {"calls": [{"caller": "Alice!", "callee": "bob"}]},
        {"calls": [{"caller": "alice", "callee": "bob!"}]},
        {"calls": [{"caller": "alice", "callee": "bob", "node": "x"}]},
        {"calls": [{"caller": "alice", "to": "bob"}]},
        {"calls": [{"caller": "alice", "callee": 7}]},
        {"calls": [{"caller": None, "callee": "bob"}]},
        {"calls": {}},
        {"calls": [], "callee": "bob"},
    ):
        assert client.request("POST", "/api/v1/calls", headers=auth, json_body=bad).code == 400
    assert calls.controller.active_calls() == []


def test_a_user_sees_only_their_own_calls_in_progress() -> None:
    calls, client, alice = make()
    calls.phone("carol", "127.0.0.4", answer=Answer(delay=1.0, sdp=sdp("carol")))
    calls.phone("dave", "127.0.0.5", answer=Answer(delay=1.0, sdp=sdp("dave")))
    auth = admin_auth(calls)
    client.request(
        "POST",
        "/api/v1/calls",
        headers=auth,
        json_body={
            "calls": [{"caller": "alice", "callee": "bob"}, {"caller": "carol", "callee": "dave"}]
        },
    )
    mine = client.get("/api/v1/calls?active=true", headers=alice).json()["calls"]
    assert [(c["caller"], c["callee"]) for c in mine] == [("alice", "bob")]
    everyone = client.get("/api/v1/calls?active=true", headers=auth).json()["calls"]
    assert len(everyone) == 2
    assert client.get("/api/v1/calls?active=yes", headers=auth).code == 400
    calls.controller.hang_up_all()
    calls.run(5)


def test_an_admin_session_needs_the_csrf_token_to_place_a_batch() -> None:
    calls, client, _ = make()
    calls.store.add_user("ops", password="ops-pass", is_admin=True)
    browser = WebClient(client.world)
    browser.login("ops")
    batch = {"calls": [{"caller": "alice", "callee": "bob"}]}
    assert browser.request("POST", "/api/v1/calls", json_body=batch).code == 403
    assert calls.controller.active_calls() == []
    reply = browser.request(
        "POST", "/api/v1/calls", json_body=batch, headers={"X-CSRF-Token": browser.api_csrf()}
    )
    assert [r["status"] for r in reply.json()["calls"]] == [201]
    calls.controller.hang_up_all()
    calls.run(5)


def test_a_batch_answers_in_its_own_order_whatever_order_the_records_are_written_in() -> None:
    """The batch's results follow its calls, also when their records are written in
    another order (a store that answers them out of order), and come once all have one."""
    calls, client, _ = make()
    calls.user("ops", is_admin=True)
    calls.user("carol")
    calls.phone("carol", "127.0.0.4", create_user=False)
    records = HeldCallRecords()
    calls.controller.records = records  # type: ignore[assignment]
    ops = success_result_of(calls.store.get_user("ops"))
    assert ops is not None
    batch = [("alice", "bob"), ("nobody", "bob"), ("carol", "bob"), ("bob", "alice")]
    placed = Deferred.fromCoroutine(client.world.app.place_calls(Principal(ops), batch))
    assert len(records.pending) == 3
    for d in (records.pending[1], records.pending[2]):
        d.callback(success_result_of(calls.store.create_call("x", "y", 0.0)))
    assert not placed.called
    records.pending[0].callback(success_result_of(calls.store.create_call("x", "y", 0.0)))
    results = success_result_of(placed)
    assert [r.status if isinstance(r, HTTPError) else r.caller for r in results] == [
        "alice",
        404,
        "carol",
        "bob",
    ]
    calls.controller.hang_up_all()
