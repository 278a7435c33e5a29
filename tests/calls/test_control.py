"""The internal call-control API ([calls] control_listen), on a fake network and clock."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq

from clicktodial.calls.control import MAX_BATCH, make_control_root
from clicktodial.testing.callfakes import CallWorld
from clicktodial.testing.uafakes import Answer, sdp


def make() -> tuple[CallWorld, StubTreq]:
    world = CallWorld()
    world.phone("alice", "127.0.0.2", answer=Answer(delay=1, sdp=sdp("alice")))
    world.phone("bob", "127.0.0.3", answer=Answer(delay=1, sdp=sdp("bob")))
    world.user("carol")  # no phone
    return world, StubTreq(make_control_root(world.controller, world.store))


def request(stub: StubTreq, method: str, url: str, body: object = None) -> tuple[int, Any]:
    results: list[Any] = []
    data = json.dumps(body).encode() if body is not None else None
    d = stub.request(method, f"http://127.0.0.1{url}", data=data)
    d.addCallback(lambda response: stub.content(response).addCallback(
        lambda content: results.append((response.code, json.loads(content)))))
    stub.flush()
    assert results, "no response"
    return results[0]  # type: ignore[no-any-return]


def test_one_call_is_placed_and_refusals_are_403() -> None:
    world, stub = make()
    status, call = request(stub, "POST", "/calls", {"caller": "alice", "callee": "bob"})
    assert (status, call["state"], call["caller"]) == (201, "calling-caller", "alice")
    assert request(stub, "POST", "/calls", {"caller": "alice", "callee": "alice"})[0] == 403
    assert request(stub, "POST", "/calls", {"caller": "alice"})[0] == 400
    world.run(5)
    status, calls = request(stub, "GET", "/calls")
    assert [c["state"] for c in calls] == ["connected"]
    assert request(stub, "DELETE", f"/calls/{call['call_id']}?by=alice") == (
        200, {"hung_up": True})
    world.run(2)
    status, record = request(stub, "GET", f"/calls/{call['call_id']}")
    assert (status, record["end_reason"]) == (200, "caller-hangup")
    world.assert_quiescent()


def test_a_list_places_every_call_with_one_result_each_in_order() -> None:
    world, stub = make()
    status, results = request(stub, "POST", "/calls", [
        {"caller": "alice", "callee": "bob"},
        {"caller": "nobody", "callee": "bob"},
        {"caller": "bob", "callee": "carol"},
    ])
    assert status == 200
    assert [r["status"] for r in results] == [201, 403, 201]
    assert results[1]["error"] == "unknown-user"
    assert results[2]["end_reason"] == "callee-unreachable"
    world.run(5)
    assert [c.state for c in world.controller.active_calls()] == ["connected"]
    world.controller.hang_up(results[0]["call_id"])
    world.run(2)
    world.assert_quiescent()


def test_a_list_must_hold_call_objects_and_be_bounded() -> None:
    world, stub = make()
    assert request(stub, "POST", "/calls", ["alice"])[0] == 400
    too_many = [{"caller": "alice", "callee": "bob"}] * (MAX_BATCH + 1)
    assert request(stub, "POST", "/calls", too_many)[0] == 400
    assert world.controller.active_calls() == []


def _status(stub: StubTreq, method: str, url: str, headers: dict[str, str]) -> tuple[int, Any]:
    results: list[Any] = []
    body = json.dumps({"caller": "alice", "callee": "bob"}).encode()
    d = stub.request(method, url, data=body if method == "POST" else None,
                     headers={k: [v] for k, v in headers.items()})
    d.addCallback(lambda response: stub.content(response).addCallback(
        lambda content: results.append((response.code, json.loads(content)))))
    stub.flush()
    assert results, "no response"
    return results[0]  # type: ignore[no-any-return]


def test_a_request_a_browser_page_could_send_is_refused_as_not_local() -> None:
    """
    CSRF and DNS rebinding: an Origin, a Sec-Fetch-Site other than none, or a Host that is
    not loopback gets 403 not-local, and no call is placed.
    """
    world, stub = make()
    refused = [
        ("http://127.0.0.1:8091/calls", {"Origin": "http://evil.example.com"}),
        ("http://127.0.0.1:8091/calls", {"Origin": "null"}),
        ("http://127.0.0.1:8091/calls", {"Sec-Fetch-Site": "cross-site"}),
        ("http://127.0.0.1:8091/calls", {"Sec-Fetch-Site": "same-origin"}),
        ("http://rebind.example.com:8091/calls", {}),
        ("http://127.0.0.1.example.com/calls", {}),
        ("http://localhost.example.com/calls", {}),
        ("http://127.0.0.1:8091/calls", {"Host": "[::1.evil]:8091"}),
        ("http://127.0.0.1:8091/calls", {"Host": "::1"}),
        ("http://127.0.0.1:8091/calls", {"Host": "192.0.2.1:8091"}),
        ("http://127.0.0.1:8091/calls", {"Host": "rebind.example.com"}),
        ("http://127.0.0.1:8091/", {"Origin": "http://evil.example.com"}),
    ]
    for url, headers in refused:
        for method in ("POST", "GET"):
            status, body = _status(stub, method, url, headers)
            assert (status, body["error"]) == (403, "not-local"), (method, url, headers)
    assert world.controller.active_calls() == []


def test_local_tools_naming_a_loopback_host_are_served() -> None:
    world, stub = make()
    served = [
        ("http://127.0.0.1:8091/calls", {}),
        ("http://127.5.6.7/calls", {}),
        ("http://localhost:8091/calls", {}),
        ("http://LOCALHOST/calls", {}),
        ("http://127.0.0.1:8091/calls", {"Host": "[::1]:8091"}),
        ("http://127.0.0.1:8091/calls", {"Host": "[0:0:0:0:0:0:0:1]"}),
        ("http://127.0.0.1:8091/calls", {"Sec-Fetch-Site": "none"}),
    ]
    for url, headers in served:
        assert _status(stub, "GET", url, headers)[0] == 200, (url, headers)
    assert _status(stub, "POST", "http://localhost:8091/calls", {"Host": "[::1]:8091"})[0] == 201
