"""
SDP handling of a 3PCC controller (RFC 3725): it never touches media, but the
descriptions it relays must look, to each phone, like one consistent session
coming from one peer.

* L{LegOrigin}: what one phone has seen from us.  RFC 3264 §8: every
  description we send in a session keeps the first one's origin (username,
  session id, address) and the version goes up by one exactly when the
  description changed.  Descriptions relayed from the other phone (RFC 3725
  §5 Flow IV's offer2') get that origin.
* L{held_answer}: Flow IV's answer1, putting every offered stream on hold.
* L{pad_media} / L{truncate_media}: RFC 3264 §8: a new offer in a session
  has at least the m-lines the session had (extra ones rejected with port
  0); an answer has exactly the m-lines of its offer.

Pure: no Twisted.  Bodies that do not parse as SDP are relayed unchanged.
"""

from __future__ import annotations

import hashlib
import secrets

import attrs

from clicktodial.sip.sdp import Media, Origin, SDPParseError, SessionDescription, split_sections

__all__ = ["LegOrigin", "held_answer", "media_count", "pad_media", "truncate_media"]


class LegOrigin:
    """The origin line one leg has seen from us, and its last description."""

    # Held for the whole call: text, not parsed values (an Origin and a list of Media
    # cost ~1.3 KB a leg; parsed again only when an offer is padded or the SDP changes).
    __slots__ = ("_origin", "_last", "_media")

    def __init__(self) -> None:
        #: The value of the o= line this leg saw first (its version bumped on change).
        self._origin: str | None = None
        #: A digest of the last description's lines but o= (16 bytes rather than the lines).
        self._last: bytes | None = None
        #: The values of the m= lines of the last description we sent.
        self._media: tuple[str, ...] = ()

    @property
    def origin(self) -> Origin | None:
        """The origin this leg keeps seeing from us (None before the first description)."""
        return Origin.parse(self._origin) if self._origin is not None else None

    @property
    def media(self) -> list[Media]:
        """The m= lines of the last description we sent (for L{pad_media})."""
        return [Media.parse(value) for value in self._media]

    def outgoing(self, body: bytes) -> bytes:
        """``body`` as this leg must see it (origin kept, version bumped on change)."""
        try:
            sdp = SessionDescription.parse(body)
            origin = sdp.origin
            sdp.media  # noqa: B018 - validate the m= lines kept as text
        except SDPParseError:
            return body
        rest = hashlib.blake2b(
            repr([line for line in sdp.lines if line[0] != "o"]).encode(), digest_size=16
        ).digest()
        media = tuple(value for kind, value in sdp.lines if kind == "m")
        if self._origin is None:
            self._origin = str(origin)
            self._last, self._media = rest, media
            return body
        kept = Origin.parse(self._origin)
        if rest != self._last:
            kept = attrs.evolve(kept, session_version=kept.session_version + 1)
            self._origin = str(kept)
        self._last, self._media = rest, media
        return sdp.with_origin(kept).serialize()


def held_answer(offer: bytes, username: str = "clicktodial") -> bytes:
    """
    An answer to ``offer`` that holds every stream (RFC 3725 §5 Flow IV
    answer1): each offered stream accepted with its first format, on the
    discard port, connection address 0.0.0.0 (RFC 3264 §8.4 hold) and
    ``a=inactive``; rejected streams stay rejected.

    @raise SDPParseError: ``offer`` is not SDP.
    """
    sdp = SessionDescription.parse(offer)
    connection = sdp.connection or next((c for _, c in sdp.media if c is not None), None)
    ip6 = connection is not None and connection.addrtype.upper() == "IP6"
    addrtype, address = ("IP6", "::") if ip6 else ("IP4", "0.0.0.0")
    session_id = str(secrets.randbelow(2**31) + 1)
    lines: list[tuple[str, str]] = [
        ("v", "0"),
        ("o", f"{username} {session_id} 1 IN {addrtype} {address}"),
        ("s", "-"),
        ("c", f"IN {addrtype} {address}"),
        ("t", "0 0"),
    ]
    _, sections = split_sections(sdp)
    for section in sections:
        media = Media.parse(section[0][1])
        if media.port == 0 or not media.formats:
            lines.append(("m", str(attrs.evolve(media, port=0))))
            continue
        fmt = media.formats[0]
        lines.append(("m", str(attrs.evolve(media, port=9, formats=(fmt,), port_count=None))))
        for kind, value in section[1:]:
            if kind == "a" and value.startswith((f"rtpmap:{fmt} ", f"fmtp:{fmt} ")):
                lines.append((kind, value))
        lines.append(("a", "inactive"))
    return SessionDescription(tuple(lines)).serialize()


def media_count(body: bytes) -> int:
    """The number of m= lines of ``body`` (0 if it is not SDP)."""
    try:
        return len(SessionDescription.parse(body).media)
    except SDPParseError:
        return 0


def pad_media(body: bytes, previous: list[Media]) -> bytes:
    """
    ``body`` with rejected m-lines (port 0) appended until it has as many as
    ``previous`` (RFC 3264 §8: m-lines are never removed from a session).
    """
    try:
        sdp = SessionDescription.parse(body)
    except SDPParseError:
        return body
    count = len(sdp.media)
    if count >= len(previous):
        return body
    lines = list(sdp.lines)
    for media in previous[count:]:
        lines.append(("m", str(attrs.evolve(media, port=0, port_count=None))))
    return SessionDescription(tuple(lines)).serialize()


def truncate_media(body: bytes, count: int) -> bytes:
    """``body`` with only its first ``count`` media sections (an answer to a shorter offer)."""
    try:
        sdp = SessionDescription.parse(body)
    except SDPParseError:
        return body
    session, sections = split_sections(sdp)
    if len(sections) <= count:
        return body
    lines = session + [line for section in sections[:count] for line in section]
    return SessionDescription(tuple(lines)).serialize()
