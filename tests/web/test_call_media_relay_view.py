"""A call's media relay state shows in the API while the daemon holds the call."""

from clicktodial.calls.events import CallInfo
from clicktodial.web.app import CallView


def test_api_shows_the_media_relay_state_of_a_call_in_progress() -> None:
    info = CallInfo("c1", "alice", "bob", "connected", 1.0, media_relay="relayed")
    assert CallView.from_info(info).to_json()["media_relay"] == "relayed"
    plain = CallInfo("c2", "alice", "bob", "connected", 1.0)
    assert CallView.from_info(plain).to_json()["media_relay"] == "off"
