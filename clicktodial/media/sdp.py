"""
SDP for a leg that gets our own RTP stream (ringback, failure tones).

* :func:`audio_destination`: where the phone's offer asks its audio to be
  sent (RFC 4566 §5.7, §5.14: the ``c=`` address, media-level over
  session-level, and the ``m=audio`` port) and which G.711 variant to use:
  the first of PCMU/PCMA in the offer's order of preference (RFC 3264 §5.1).
* :func:`ringback_answer`: our answer to that offer (RFC 3264 §6): the
  chosen audio stream accepted on our address and port with one format and
  ``a=sendrecv`` (what the phone sends is dropped) or ``a=sendonly``; every
  other stream rejected with port 0, so the answer has exactly the offer's
  m-lines.

Builds on :mod:`clicktodial.sip.sdp`.  Pure: no Twisted.
"""

from __future__ import annotations

import ipaddress
import secrets

import attrs

from clicktodial.media.codecs import Codec
from clicktodial.media.rtp import check_destination
from clicktodial.sip.sdp import Media, SDPParseError, SessionDescription, split_sections

__all__ = ["AudioOffer", "NoUsableMedia", "audio_destination", "ringback_answer"]

_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class NoUsableMedia(ValueError):
    """The offer has no audio stream we can send G.711 to; the message says why."""


@attrs.frozen
class AudioOffer:
    """
    The audio stream of an offer that we will send to.

    :ivar index: the position of its ``m=`` line among the offer's m-lines.
    :ivar host: the unicast address to send to.
    :ivar port: the RTP port to send to.
    :ivar codec: PCMU or PCMA.
    :ivar payload_type: the number the offer gave the codec (0/8, or a dynamic one
        mapped by ``a=rtpmap``).
    """

    index: int
    host: str
    port: int
    codec: Codec
    payload_type: int

    @property
    def destination(self) -> tuple[str, int]:
        """``(host, port)``."""
        return self.host, self.port


def _direction(lines: list[tuple[str, str]]) -> str | None:
    for kind, value in lines:
        if kind == "a" and value in _DIRECTIONS:
            return value
    return None


def _g711_format(media: Media, lines: list[tuple[str, str]]) -> tuple[Codec, int] | None:
    # RFC 3551 §6: 0 and 8 are static; an a=rtpmap may also give a dynamic number to them.
    mapped: dict[str, Codec] = {}
    for kind, value in lines:
        if kind == "a" and value.startswith("rtpmap:"):
            number, _, encoding = value[len("rtpmap:") :].partition(" ")
            name, _, rest = encoding.strip().partition("/")
            clock = rest.partition("/")[0]
            if name.upper() in ("PCMU", "PCMA") and clock == "8000":
                mapped[number] = Codec[name.upper()]
    for fmt in media.formats:
        if fmt in mapped:
            return mapped[fmt], int(fmt)
        if fmt in ("0", "8"):
            return Codec.from_payload_type(int(fmt)), int(fmt)
    return None


def audio_destination(offer: bytes) -> AudioOffer:
    """
    The first audio stream of ``offer`` that we can send G.711 to.

    :raises NoUsableMedia: the offer is not SDP, or no stream is RTP/AVP audio with PCMU or
        PCMA, a unicast address, a port, and a direction that lets us send.
    """
    try:
        sdp = SessionDescription.parse(offer)
        session_connection = sdp.connection
        media = sdp.media
    except SDPParseError as e:
        raise NoUsableMedia(f"the offer is not SDP: {e}") from None
    session, sections = split_sections(sdp)
    session_direction = _direction(session) or "sendrecv"
    reasons = []
    for index, ((m, connection), lines) in enumerate(zip(media, sections, strict=True)):
        if m.media != "audio" or m.proto.upper() not in ("RTP/AVP", "RTP/AVPF"):
            continue
        if m.port == 0:
            continue
        direction = _direction(lines) or session_direction
        if direction in ("sendonly", "inactive"):
            reasons.append(f"audio stream {index} is {direction}")
            continue
        chosen = _g711_format(m, lines)
        if chosen is None:
            reasons.append(f"audio stream {index} offers neither PCMU nor PCMA")
            continue
        c = connection or session_connection
        if c is None:
            reasons.append(f"audio stream {index} has no c= line")
            continue
        try:
            host, port = check_destination(c.address, m.port)
        except ValueError as e:
            reasons.append(str(e))
            continue
        return AudioOffer(index, host, port, chosen[0], chosen[1])
    raise NoUsableMedia(
        "no usable audio stream in the offer"
        + (f" ({'; '.join(reasons)})" if reasons else " (no RTP/AVP audio)")
    )


def ringback_answer(
    offer: bytes,
    chosen: AudioOffer,
    address: str,
    port: int,
    username: str = "clicktodial",
    direction: str = "sendrecv",
) -> bytes:
    """
    Our answer to ``offer``: ``chosen`` accepted on ``address``:``port`` with its one
    format, ``a=ptime:20`` and ``a=<direction>``; the other m-lines rejected (port 0).

    ``sendrecv`` (the default) lets the phone send to our port, where it is dropped:
    phones take a ``sendonly`` peer for one that put them on hold (RFC 3264 §8.4),
    and baresip 1.x then plays nothing (docs/media.md).  ``sendonly`` says that we
    only send.

    :raises NoUsableMedia: ``offer`` is not SDP.
    """
    if direction not in ("sendonly", "sendrecv"):
        raise ValueError(f"invalid direction {direction!r} (sendonly or sendrecv)")
    try:
        sdp = SessionDescription.parse(offer)
    except SDPParseError as e:
        raise NoUsableMedia(f"the offer is not SDP: {e}") from None
    addrtype = "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    session_id = str(secrets.randbelow(2**31) + 1)
    lines: list[tuple[str, str]] = [
        ("v", "0"),
        ("o", f"{username} {session_id} 1 IN {addrtype} {address}"),
        ("s", "-"),
        ("c", f"IN {addrtype} {address}"),
        ("t", "0 0"),
    ]
    _, sections = split_sections(sdp)
    for index, section in enumerate(sections):
        m = Media.parse(section[0][1])
        if index != chosen.index:
            lines.append(("m", str(attrs.evolve(m, port=0, port_count=None))))
            continue
        fmt = str(chosen.payload_type)
        lines.append(("m", str(attrs.evolve(m, port=port, formats=(fmt,), port_count=None))))
        lines.append(("a", f"rtpmap:{fmt} {chosen.codec.encoding_name}/8000"))
        lines.append(("a", "ptime:20"))
        lines.append(("a", direction))
    return SessionDescription(tuple(lines)).serialize()
