"""
SDP (clicktodial.sip.sdp) as the call controller uses it: relayed between the legs of a
3PCC call (RFC 3725, RFC 3264 §8), and our own answers: Flow IV's held answer, and for
the ringback leg where to send, which codec, and our answer.
"""

import pytest

from clicktodial.sip.sdp import (
    NoUsableMedia,
    SDPParseError,
    SessionDescription,
    accepts_media,
    audio_destination,
    check_destination,
    held_answer,
    pad_media,
    relayed_to_leg,
    ringback_answer,
    sent_media,
    sent_origin,
    truncate_media,
)
from clicktodial.testing.uafakes import sdp


def offer(*media: str, session: str = "c=IN IP4 127.0.0.5\r\n") -> bytes:
    head = "v=0\r\no=phone 1 1 IN IP4 127.0.0.5\r\ns=-\r\n" + session + "t=0 0\r\n"
    return (head + "".join(media)).encode()


AUDIO = "m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"


def test_destination_is_the_c_address_and_m_port() -> None:
    """The session c= address and the audio m= port; the offer's first G.711 codec."""
    chosen = audio_destination(offer(AUDIO))
    assert chosen.destination == ("127.0.0.5", 4000)
    assert (chosen.encoding, chosen.payload_type, chosen.index) == ("PCMA", 8, 0)


def test_media_level_connection_wins() -> None:
    """A media-level c= overrides the session-level one (RFC 4566 §5.7)."""
    chosen = audio_destination(offer("m=audio 4002 RTP/AVP 0\r\nc=IN IP4 127.0.0.7\r\n"))
    assert chosen.destination == ("127.0.0.7", 4002)
    assert chosen.encoding == "PCMU"


def test_skips_video_and_rejected_streams() -> None:
    """The first usable audio stream is chosen; video and port-0 streams are passed over."""
    body = offer(
        "m=video 5000 RTP/AVP 96\r\n", "m=audio 0 RTP/AVP 0\r\n", "m=audio 6000 RTP/AVP 0\r\n"
    )
    assert audio_destination(body).index == 2


def test_dynamic_payload_type_mapped_to_g711() -> None:
    """An a=rtpmap giving PCMU/8000 a dynamic number is used with that number."""
    chosen = audio_destination(offer("m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 PCMU/8000\r\n"))
    assert (chosen.encoding, chosen.payload_type) == ("PCMU", 96)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (offer("m=audio 4000 RTP/AVP 18 9\r\n"), "neither PCMU nor PCMA"),
        (offer("m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n"), "sendonly"),
        (
            offer("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP4 0.0.0.0\r\na=inactive\r\n"),
            "inactive",
        ),
        (offer("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP4 0.0.0.0\r\n"), "not a unicast"),
        (offer("m=audio 4000 RTP/AVP 0\r\n", session=""), "no c= line"),
        (offer("m=video 4000 RTP/AVP 96\r\n"), "no RTP/AVP audio"),
        (b"not sdp", "not SDP"),
    ],
)
def test_unusable_offers_say_why(body: bytes, reason: str) -> None:
    """An offer we cannot send to raises NoUsableMedia saying why."""
    with pytest.raises(NoUsableMedia, match=reason):
        audio_destination(body)


def test_ringback_answer() -> None:
    """Our answer: one format on our address/port, sendrecv, other m-lines rejected."""
    body = offer("m=video 5000 RTP/AVP 96\r\n", AUDIO)
    chosen = audio_destination(body)
    answer = SessionDescription.parse(ringback_answer(body, chosen, "127.0.0.1", 20000))
    media = answer.media
    assert [(m.media, m.port) for m, _ in media] == [("video", 0), ("audio", 20000)]
    assert media[1][0].formats == ("8",)
    assert answer.connection is not None and answer.connection.address == "127.0.0.1"
    lines = [v for k, v in answer.lines if k == "a"]
    assert lines == ["rtpmap:8 PCMA/8000", "ptime:20", "sendrecv"]


def test_ringback_answer_ipv6() -> None:
    """An IPv6 media address is written as IP6 in o= and c=."""
    body = offer(AUDIO)
    answer = SessionDescription.parse(ringback_answer(body, audio_destination(body), "::1", 20002))
    assert answer.connection is not None
    assert (answer.connection.addrtype, answer.connection.address) == ("IP6", "::1")
    assert answer.origin.addrtype == "IP6"


def test_sendonly_answer_when_configured() -> None:
    """direction=sendonly writes a=sendonly; recvonly or inactive are refused."""
    body = offer(AUDIO)
    answer = ringback_answer(
        body, audio_destination(body), "127.0.0.1", 20000, direction="sendonly"
    )
    assert b"a=sendonly\r\n" in answer and b"sendrecv" not in answer
    for refused in ("recvonly", "inactive"):
        with pytest.raises(ValueError, match="invalid direction"):
            ringback_answer(body, audio_destination(body), "127.0.0.1", 20000, direction=refused)


_ANSWER_HEAD = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


@pytest.mark.parametrize(
    ("media", "usable"),
    [
        ("m=audio 4000 RTP/AVP 0\r\n", True),
        ("m=audio 4000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n", True),
        ("m=audio 0 RTP/AVP 0\r\n", False),
        ("m=audio 4000 RTP/AVP 101\r\na=rtpmap:101 telephone-event/8000\r\n", False),
        ("m=audio 4000 RTP/AVP 13\r\n", False),
        ("m=audio 4000 RTP/AVP 96 97\r\na=rtpmap:96 CN/8000\r\na=rtpmap:97 red/8000\r\n", False),
        ("m=audio 0 RTP/AVP 0\r\nm=video 5000 RTP/AVP 31\r\n", True),
    ],
)
def test_an_answer_without_a_usable_stream_carries_no_conversation(
    media: str, usable: bool
) -> None:
    assert accepts_media((_ANSWER_HEAD + media).encode()) is usable


TWO_STREAMS = (
    b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    b"m=video 0 RTP/AVP 31\r\n"
)


def test_held_answer_accepts_each_stream_on_hold_with_its_first_format() -> None:
    answer = SessionDescription.parse(held_answer(TWO_STREAMS))
    media = [m for m, _ in answer.media]
    assert [(m.media, m.port, m.formats) for m in media] == [
        ("audio", 9, ("8",)),
        ("video", 0, ("31",)),
    ]
    assert answer.connection.address == "0.0.0.0"  # type: ignore[union-attr]
    assert ("a", "inactive") in answer.lines and ("a", "rtpmap:8 PCMA/8000") in answer.lines
    assert ("a", "rtpmap:0 PCMU/8000") not in answer.lines


def test_leg_keeps_the_first_origin_and_bumps_the_version_only_on_change() -> None:
    first = relayed_to_leg(None, sdp("alice"))
    assert first is not None and first == sdp("alice")
    same = relayed_to_leg(first, sdp("bob"))
    assert same is not None
    parsed = SessionDescription.parse(same)
    assert (parsed.origin.username, parsed.origin.session_version) == ("alice", 1)
    changed = relayed_to_leg(same, sdp("bob", port=5000))
    assert changed is not None
    parsed = SessionDescription.parse(changed)
    assert (parsed.origin.username, parsed.origin.session_version) == ("alice", 2)
    assert sent_origin(changed) == parsed.origin and sent_origin(None) is None
    assert [m.port for m in sent_media(changed)] == [5000] and sent_media(None) == []


def test_a_body_that_is_not_sdp_is_relayed_unchanged_and_not_kept() -> None:
    """relayed_to_leg says None: the leg sends it as it is and keeps its last SDP."""
    assert relayed_to_leg(sdp("alice"), b"not sdp") is None
    assert relayed_to_leg(None, b"") is None


def test_offers_keep_the_sessions_m_lines_and_answers_match_their_offer() -> None:
    previous = [m for m, _ in SessionDescription.parse(TWO_STREAMS).media]
    padded = SessionDescription.parse(pad_media(sdp("bob"), previous))
    assert [(m.media, m.port) for m, _ in padded.media] == [("audio", 40000), ("video", 0)]
    assert len(SessionDescription.parse(truncate_media(TWO_STREAMS, 1)).media) == 1


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("0.0.0.0", 4000),
        ("::", 4000),
        ("224.0.0.1", 4000),
        ("phone.example", 4000),
        ("127.0.0.1", 0),
    ],
)
def test_destination_must_be_unicast_ip_and_port(host: str, port: int) -> None:
    """Hold addresses, multicast, hostnames and port 0 are not destinations."""
    with pytest.raises(ValueError):
        check_destination(host, port)


def test_a_description_reads_its_origin_once_and_is_an_immutable_value() -> None:
    """parse() checks the o= line (and the first one is the origin); reading the origin
    again gives the same object; a copy with another origin keeps every other line; two
    descriptions of the same lines are equal, and the lines cannot be reassigned."""
    body = offer("m=audio 4000 RTP/AVP 0\r\n").replace(b"s=-", b"s=-\r\no=second 2 2 IN IP4 ::1")
    parsed = SessionDescription.parse(body)
    assert parsed.origin is parsed.origin
    assert (parsed.origin.username, parsed.origin.session_version) == ("phone", 1)
    bumped = parsed.with_bumped_version()
    assert bumped.origin.session_version == 2
    assert [line for line in bumped.lines if line[0] != "o"] == [
        line for line in parsed.lines if line[0] != "o"
    ]
    assert ("o", "second 2 2 IN IP4 ::1") in bumped.lines
    built = SessionDescription(list(parsed.lines))
    assert built == parsed and hash(built) == hash(parsed) and built.origin == parsed.origin
    assert built.serialize() == body
    assert SessionDescription([]).serialize() == b""
    with pytest.raises(AttributeError):
        parsed.lines = ()  # type: ignore[misc]
    with pytest.raises(SDPParseError, match="no o= line"):
        SessionDescription([("v", "0")]).origin  # noqa: B018
    with pytest.raises(SDPParseError, match="version is not a number"):
        SessionDescription.parse(b"v=0\r\no=x 1 one IN IP4 127.0.0.1\r\n")


def test_a_body_parsed_again_gives_the_same_description_from_a_bounded_memory() -> None:
    """The same body (bytes) parsed again is the same immutable description, its media
    read once (each read a new list); the memory is a bounded wire cache that
    reset_all empties; a malformed body is never remembered."""
    from clicktodial.sip import wirecache

    body = offer("m=audio 4000 RTP/AVP 0\r\n", "m=video 0 RTP/AVP 31\r\nc=IN IP4 ::1\r\n")
    first = SessionDescription.parse(body)
    assert SessionDescription.parse(bytes(body)) is first
    media = first.media
    assert media == first.media and media is not first.media
    media.clear()
    assert [(m.media, m.port, c) for m, c in first.media][0] == ("audio", 4000, None)
    [cache] = [c for c in wirecache.registered() if c.name == "sdp.descriptions"]
    assert 0 < len(cache) <= cache.limit == 256
    wirecache.reset_all()
    assert len(cache) == 0
    again = SessionDescription.parse(body)
    assert again is not first and again == first
    with pytest.raises(SDPParseError):
        SessionDescription.parse(b"v=0\r\n")
    assert b"v=0\r\n" not in cache.entries
    for i in range(cache.limit + 10):
        SessionDescription.parse(offer(f"m=audio {i + 1} RTP/AVP 0\r\n"))
        assert len(cache) <= cache.limit
