"""A call's media relay state shows in the API while the daemon holds the call."""

from clicktodial.calls.events import CallInfo
from clicktodial.store.values import CallRecord
from clicktodial.web.app import call_json


def test_api_shows_the_media_relay_state_of_a_call_in_progress() -> None:
    info = CallInfo("c1", "alice", "bob", "connected", 1.0, media_relay="relayed")
    assert call_json(info)["media_relay"] == "relayed"
    plain = CallInfo("c2", "alice", "bob", "connected", 1.0)
    assert call_json(plain)["media_relay"] == "off"


def test_api_shows_no_media_relay_state_for_a_call_rebuilt_from_its_record() -> None:
    """The record does not keep the relay state: the API leaves the field out."""
    record = CallRecord("c3", "alice", "bob", 1.0, connected_at=2.0, ended_at=5.5)
    value = call_json(CallInfo.from_record(record))
    assert "media_relay" not in value
    assert (value["state"], value["duration"]) == ("ended", 3.5)


def test_api_names_the_fields_of_a_call_as_docs_web_md_does() -> None:
    """``created``, ``answered``, ``reason`` are CallInfo's created_at, connected_at, end_reason."""
    info = CallInfo(
        "c4",
        "alice",
        "bob",
        "ended",
        0.0,
        connected_at=1.0,
        ended_at=2.25,
        end_reason="caller-hangup",
        who_hung_up="caller",
    )
    assert call_json(info) == {
        "id": "c4",
        "state": "ended",
        "caller": "alice",
        "callee": "bob",
        "created": "1970-01-01T00:00:00.000Z",
        "answered": "1970-01-01T00:00:01.000Z",
        "ended_at": "1970-01-01T00:00:02.250Z",
        "duration": 1.25,
        "reason": "caller-hangup",
        "who_hung_up": "caller",
        "media_relay": "off",
    }
