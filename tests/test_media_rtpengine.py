"""
rtpengine's ng protocol on a fake clock and a fake datagram port: bencoding,
retransmission with backoff, timeout and failover, error replies, cookie and
source matching, garbage dropped; the relay's commands and stickiness.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from clicktodial.interfaces import IMediaRelay
from clicktodial.media.bencode import bdecode, bencode
from clicktodial.media.rtpengine import (
    NgClient,
    RelayError,
    RelayTimeout,
    RtpEngineRelay,
    retransmit_delays,
)
from clicktodial.testing.transport import FakeDatagramPort

NG = ("127.0.0.1", 22222)
NG2 = ("127.0.0.2", 22222)


# -- bencode -------------------------------------------------------------------


def test_bencode_encodes_rtpengine_commands_with_sorted_keys() -> None:
    assert bencode({"command": "ping"}) == b"d7:command4:pinge"
    assert bencode({"b": [1, b"x"], "a": -3}) == b"d1:ai-3e1:bli1e1:xee"


def test_bdecode_accepts_rtpengine_replies_whose_keys_are_not_sorted() -> None:
    # rtpengine 10.5 puts "sdp" before "result".
    assert bdecode(b"d3:sdp3:v=06:result2:oke") == {"sdp": b"v=0", "result": b"ok"}


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"x",
        b"d6:result",
        b"i01e",
        b"i-0e",
        b"ie",
        b"d1:a1:b",
        b"4:ab",
        b"di1ei2ee",
        b"03:abc",
        b"i1ei2e",
        b"l" * 100 + b"e" * 100,
        b"d\xff\xfe:ae",
        b"d2:\xff\xfe1:ae",
        b"-1:a",
        b"l",
    ],
)
def test_bdecode_raises_only_value_error_on_garbage(garbage: bytes) -> None:
    with pytest.raises(ValueError):
        bdecode(garbage)


values = st.recursive(
    st.binary(max_size=20) | st.integers(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text("abcdefgh-", max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(values)
def test_bencode_round_trips(value: object) -> None:
    assert bdecode(bencode(value)) == value  # type: ignore[arg-type]


@given(st.binary(max_size=40))
def test_bdecode_of_any_bytes_returns_or_raises_value_error(data: bytes) -> None:
    try:
        bdecode(data)
    except ValueError:
        pass


# -- the client ----------------------------------------------------------------


def make_client(
    servers: list[tuple[str, int]] | None = None, timeout: float = 1.5, retries: int = 3
) -> tuple[Clock, NgClient, FakeDatagramPort]:
    clock = Clock()
    client = NgClient(clock, servers or [NG], timeout=timeout, retries=retries)
    port = FakeDatagramPort(client, "127.0.0.1", 40000)
    return clock, client, port


def reply_to(port: FakeDatagramPort, body: bytes, server: tuple[str, int] = NG) -> None:
    (datagram, to), *_ = port.written
    cookie = datagram.split(b" ", 1)[0]
    port.receive(cookie + b" " + body, *server)


def results(d: object) -> list[object]:
    out: list[object] = []
    d.addBoth(out.append)  # type: ignore[attr-defined]
    return out


def test_retransmit_delays_double_and_fit_in_the_timeout() -> None:
    assert retransmit_delays(1.5, 3) == [0.0, 0.1, 0.3, 0.7]
    assert retransmit_delays(2.0, 0) == [0.0]


def test_a_command_is_one_cookie_then_a_bencoded_dictionary() -> None:
    clock, client, port = make_client()
    d = client.command("ping")
    [(datagram, to)] = port.written
    cookie, _, body = datagram.partition(b" ")
    assert to == NG and cookie and b" " not in cookie
    assert bdecode(body) == {"command": b"ping"}
    got = results(d)
    reply_to(port, b"d6:result4:ponge")
    assert got == [{"result": b"pong", "_server": NG}]
    assert client.pending_count() == 0 and not clock.getDelayedCalls()
    assert client.stats.round_trip_count == 1


def test_cookies_are_unique_per_command() -> None:
    _, client, port = make_client()
    client.command("ping")
    client.command("ping")
    cookies = {d.split(b" ")[0] for d, _ in port.written}
    assert len(cookies) == 2


def test_unanswered_command_is_retransmitted_with_backoff_then_times_out() -> None:
    clock, client, port = make_client(timeout=1.5, retries=3)
    got = results(client.command("offer", {"call-id": "c"}))
    assert len(port.take()) == 1
    times = []
    for _ in range(200):
        clock.advance(0.01)
        if port.written:
            times.append(round(clock.seconds(), 2))
            assert len({d for d, _ in port.take()}) == 1
    # first send at 0 (before the loop), then 0.1, 0.3, 0.7
    assert times == pytest.approx([0.1, 0.3, 0.7], abs=0.011)
    assert len(got) == 1 and got[0].check(RelayTimeout)  # type: ignore[attr-defined]
    assert "offer" in str(got[0].value)  # type: ignore[attr-defined]
    assert client.stats.timeouts == 1 and client.stats.retransmissions == 3
    assert client.pending_count() == 0 and not clock.getDelayedCalls()


def test_same_cookie_on_every_retransmission() -> None:
    clock, client, port = make_client()
    client.command("ping")
    clock.pump([0.05] * 20)
    assert len({d for d, _ in port.written}) == 1 and len(port.written) == 4


def test_next_server_is_tried_when_the_first_does_not_answer() -> None:
    clock, client, port = make_client([NG, NG2], timeout=1.0, retries=1)
    got = results(client.command("ping"))
    clock.pump([0.05] * 21)
    assert [to for _, to in port.written] == [NG, NG, NG2]
    reply_to(port, b"d6:result4:ponge", NG2)
    assert got == [{"result": b"pong", "_server": NG2}]


def test_error_reply_fails_with_the_error_reason() -> None:
    clock, client, port = make_client()
    got = results(client.command("bogus"))
    reply_to(port, b"d6:result5:error12:error-reason20:Unrecognized commande")
    [failure] = got
    assert failure.check(RelayError) and not failure.check(RelayTimeout)  # type: ignore[attr-defined]
    assert failure.value.reason == "Unrecognized command"  # type: ignore[attr-defined]
    assert client.stats.errors == 1 and not clock.getDelayedCalls()


def test_replies_are_matched_by_cookie() -> None:
    _, client, port = make_client()
    first = results(client.command("ping"))
    second = results(client.command("list"))
    cookie2 = port.written[1][0].split(b" ")[0]
    port.receive(cookie2 + b" d5:callsle6:result2:oke", *NG)
    assert first == [] and second == [{"calls": [], "result": b"ok", "_server": NG}]


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"nocookie",
        b"OTHER d6:result2:oke",
        b"COOKIE garbage",
        b"COOKIE i3e",
        b"COOKIE d6:result2:ok",
    ],
)
def test_garbage_and_unknown_cookies_are_dropped(datagram: bytes) -> None:
    clock, client, port = make_client()
    got = results(client.command("ping"))
    cookie = port.written[0][0].split(b" ")[0]
    port.receive(datagram.replace(b"COOKIE", cookie), *NG)
    assert got == [] and client.pending_count() == 1 and client.stats.dropped == 1
    reply_to(port, b"d6:result4:ponge")
    assert len(got) == 1


def test_reply_from_another_address_is_dropped() -> None:
    _, client, port = make_client()
    got = results(client.command("ping"))
    reply_to(port, b"d6:result4:ponge", ("127.0.0.9", 22222))
    assert got == [] and client.stats.dropped == 1


def test_a_reply_delivered_while_sending_leaves_no_retransmission_timer() -> None:
    clock = Clock()
    client = NgClient(clock, [NG])

    class AnswersAtOnce(FakeDatagramPort):
        def write(self, datagram: bytes, addr: tuple[str, int]) -> None:
            super().write(datagram, addr)
            self.receive(datagram.split(b" ")[0] + b" d6:result4:ponge", *addr)

    AnswersAtOnce(client, "127.0.0.1", 40000)
    got = results(client.command("ping"))
    assert got == [{"result": b"pong", "_server": NG}]
    assert not clock.getDelayedCalls()
    clock.pump([0.1] * 20)  # no retransmission, no second result


def test_cancelling_forgets_the_command() -> None:
    clock, client, port = make_client()
    d = client.command("ping")
    d.addErrback(lambda _: None)
    d.cancel()
    assert client.pending_count() == 0 and not clock.getDelayedCalls()


def test_stopping_fails_pending_commands() -> None:
    clock, client, port = make_client()
    got = results(client.command("ping"))
    port.stopListening()
    assert got[0].check(RelayError)  # type: ignore[attr-defined]
    assert not clock.getDelayedCalls()


# -- the relay -----------------------------------------------------------------


def test_relay_provides_the_interface() -> None:
    _, client, _ = make_client()
    assert verifyObject(IMediaRelay, RtpEngineRelay(client))


def test_relay_offer_names_the_signalling_source_and_returns_the_rewritten_sdp() -> None:
    _, client, port = make_client()
    relay = RtpEngineRelay(client, ["pub", "priv"])
    got = results(relay.offer("call1", "caller", b"v=0\r\n", "198.51.100.7"))
    sent = bdecode(port.written[0][0].split(b" ", 1)[1])
    assert sent == {
        "command": b"offer",
        "call-id": b"call1",
        "from-tag": b"caller",
        "sdp": b"v=0\r\n",
        "ICE": b"remove",
        "replace": [b"session-connection"],
        "received-from": [b"IP4", b"198.51.100.7"],
        "flags": [b"SIP-source-address"],
        "direction": [b"pub", b"priv"],
    }
    reply_to(port, b"d3:sdp5:v=1\r\n6:result2:oke")
    assert got == [b"v=1\r\n"] and relay.sessions() == 1


def test_relay_without_source_trusts_the_sdp_address() -> None:
    _, client, port = make_client()
    relay = RtpEngineRelay(client)
    relay.answer("c", "a", "b", b"v=0\r\n", None)
    sent = bdecode(port.written[0][0].split(b" ", 1)[1])
    assert sent["flags"] == [b"trust-address"] and sent["to-tag"] == b"b"  # type: ignore[index]
    assert "direction" not in sent  # type: ignore[operator]


def test_relay_reply_without_sdp_is_an_error() -> None:
    _, client, port = make_client()
    got = results(RtpEngineRelay(client).offer("c", "a", b"v=0\r\n", None))
    reply_to(port, b"d6:result2:oke")
    assert got[0].check(RelayError)  # type: ignore[attr-defined]


def test_relay_delete_goes_where_the_offer_went_and_forgets_the_call() -> None:
    clock, client, port = make_client([NG, NG2], timeout=1.0, retries=0)
    relay = RtpEngineRelay(client)
    relay.offer("c", "a", b"v=0\r\n", None)
    clock.pump([0.1] * 11)
    *_, (datagram, to) = port.take()
    assert to == NG2
    port.receive(datagram.split(b" ")[0] + b" d3:sdp3:v=06:result2:oke", *NG2)
    relay.answer("c", "a", "b", b"v=0\r\n", None)
    got = results(relay.delete("c"))
    sent = port.take()
    assert [to for _, to in sent] == [NG2, NG2]
    assert bdecode(sent[1][0].split(b" ", 1)[1]) == {"command": b"delete", "call-id": b"c"}
    port.receive(sent[1][0].split(b" ")[0] + b" d6:result2:oke", *NG2)
    assert got == [None] and relay.sessions() == 0


def test_relay_delete_of_a_call_it_did_not_offer_goes_to_every_server() -> None:
    """A lost call (a crashed run's, a dead node's) may be on any rtpengine: one success does."""
    clock, client, port = make_client([NG, NG2], timeout=1.0, retries=0)
    relay = RtpEngineRelay(client)
    got = results(relay.delete("lost"))
    sent = port.take()
    assert [to for _, to in sent] == [NG, NG2]
    for datagram, _ in sent:
        assert bdecode(datagram.split(b" ", 1)[1]) == {"command": b"delete", "call-id": b"lost"}
    port.receive(sent[0][0].split(b" ")[0] + b" d6:result5:error12:error-reason7:Unknowne", *NG)
    assert got == []
    port.receive(sent[1][0].split(b" ")[0] + b" d6:result2:oke", *NG2)
    assert got == [None] and client.pending_count() == 0


def test_relay_delete_on_every_server_fails_when_none_deleted_the_call() -> None:
    clock, client, port = make_client([NG, NG2], timeout=1.0, retries=0)
    got = results(RtpEngineRelay(client).delete("lost"))
    first, _ = port.take()
    port.receive(first[0].split(b" ")[0] + b" d6:result5:error12:error-reason7:Unknowne", *NG)
    clock.pump([0.1] * 11)  # NG2 never answers
    assert len(got) == 1 and got[0].check(RelayError)  # type: ignore[attr-defined]
    assert "Unknown" in str(got[0].value)  # type: ignore[attr-defined]
    assert client.pending_count() == 0 and not clock.getDelayedCalls()
