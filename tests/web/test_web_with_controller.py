"""
The API and event stream on the real call controller: the daemon's UA core and fake phones
on one in-memory network (``CallWorld``), a fake clock, StubTreq.
"""

import json

from clicktodial.store.values import BindingChanges, ContactChange, user_aor
from clicktodial.testing.callfakes import DOMAIN, CallWorld
from clicktodial.testing.uafakes import Answer, sdp
from clicktodial.testing.webfakes import WebClient, WebWorld
from clicktodial.web.app import SoftphoneSettings, WebApp
from clicktodial.web.events import RegistrationMonitor


def make() -> tuple[CallWorld, WebClient, dict[str, str]]:
    calls = CallWorld()
    calls.phone("alice", "127.0.0.2", answer=Answer(delay=1.0, sdp=sdp("alice")))
    calls.phone("bob", "127.0.0.3", answer=Answer(delay=2.0, sdp=sdp("bob")))
    monitor = RegistrationMonitor(calls.clock, calls.store, DOMAIN, interval=2.0)
    app = WebApp(calls.clock, calls.store, calls.controller, monitor,
                 SoftphoneSettings("127.0.0.1", 5060, ("udp",), DOMAIN))
    world = WebWorld(calls.clock, calls.store, calls.controller, app)  # type: ignore[arg-type]
    client = WebClient(world)
    token = calls.store.create_token("alice").result
    return calls, client, {"Authorization": f"Bearer {token}"}


def events_of(stream: bytes, kind: bytes) -> list[dict]:  # type: ignore[type-arg]
    found = []
    for block in stream.split(b"\n\n"):
        lines = block.split(b"\n")
        if lines[0] == b"event: " + kind:
            found.append(json.loads(lines[-1][len(b"data: "):]))
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
    call_id = client.request("POST", "/api/v1/calls", json_body={"callee": "bob"},
                             headers=auth).json()["id"]
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
    changes = [(e["username"], e["registered"]) for e in
               events_of(client.streamed(), b"registration")]
    assert changes == [("carol", True), ("carol", False)]
