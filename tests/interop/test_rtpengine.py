"""
Our ng client against a real rtpengine (started by the test, userspace
forwarding): ping, offer and answer of real SDP, RTP actually relayed both
ways between two UDP sockets through the rewritten addresses, an error reply
turned into RelayError, delete, and ``list`` empty afterwards.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from rtpenginetools import PrivateReactor, need_rtpengine, running_rtpengine

from clicktodial.media.rtp import RtpHeader, parse_packet
from clicktodial.media.rtpengine import NgClient, RelayError, RtpEngineRelay
from clicktodial.sip.sdp import SessionDescription

pytestmark = pytest.mark.interop

NG = ("127.0.0.1", 22223)


def offer_sdp(port: int) -> bytes:
    return (
        "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=sendrecv\r\n"
    ).encode()


def media_address(sdp: bytes) -> tuple[str, int]:
    description = SessionDescription.parse(sdp)
    media, connection = description.media[0]
    address = (connection or description.connection).address  # type: ignore[union-attr]
    return address, media.port


@pytest.fixture
def engine(tmp_path) -> Iterator[tuple[PrivateReactor, NgClient]]:  # type: ignore[no-untyped-def]
    need_rtpengine()
    private = PrivateReactor()
    client = NgClient(private.reactor, [NG], timeout=2.0, retries=3)
    port = private.reactor.listenUDP(0, client, interface="127.0.0.1")
    with running_rtpengine(["127.0.0.1"], NG, (31000, 31099), str(tmp_path / "rtpengine.log")):
        yield private, client
    port.stopListening()


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


def rtp(sequence: int) -> bytes:
    return RtpHeader(0, sequence, sequence * 160, 0x1234).pack() + b"\xff" * 160


def test_offer_answer_relays_rtp_both_ways_and_delete_leaves_no_session(engine) -> None:  # type: ignore[no-untyped-def]
    private, client = engine
    relay = RtpEngineRelay(client)
    assert private.wait(client.command("ping"))["result"] == b"pong"

    alice, bob = udp(), udp()
    try:
        to_bob = private.wait(
            relay.offer("nat-call-1", "caller", offer_sdp(alice.getsockname()[1]), None)
        )
        relay_for_alice_side = media_address(to_bob)  # where bob must send
        assert relay_for_alice_side[1] != alice.getsockname()[1]
        to_alice = private.wait(
            relay.answer("nat-call-1", "caller", "callee", offer_sdp(bob.getsockname()[1]), None)
        )
        relay_for_bob_side = media_address(to_alice)  # where alice must send
        assert relay_for_bob_side[0] == "127.0.0.1"

        for n in range(5):
            alice.sendto(rtp(n), relay_for_bob_side)
        received = [parse_packet(bob.recvfrom(2048)[0])[0].sequence for _ in range(5)]
        # Each packet relayed once; rtpengine's threads may forward a burst out of order (as
        # any network may: receivers order RTP by sequence number).
        assert sorted(received) == [0, 1, 2, 3, 4]
        for n in range(5):
            bob.sendto(rtp(100 + n), relay_for_alice_side)
        received = [parse_packet(alice.recvfrom(2048)[0])[0].sequence for _ in range(5)]
        assert sorted(received) == [100, 101, 102, 103, 104]

        query = private.wait(relay.query("nat-call-1"))
        assert "tags" in query
        assert private.wait(client.command("list"))["calls"] == [b"nat-call-1"]
        private.wait(relay.delete("nat-call-1"))
        assert private.wait(client.command("list"))["calls"] == []
        assert relay.sessions() == 0 and client.pending_count() == 0
    finally:
        alice.close()
        bob.close()


def test_an_error_reply_is_a_relay_error(engine) -> None:  # type: ignore[no-untyped-def]
    private, client = engine
    with pytest.raises(RelayError, match="Unrecognized command"):
        private.wait(client.command("no-such-command"))
