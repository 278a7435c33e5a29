"""
SDP (RFC 4566) and offer/answer (RFC 3264), in one place: the wire format of session
descriptions, the dialog layer's offer/answer bookkeeping, and the descriptions the call
controller relays or writes itself.

* Reading and rewriting a description: :class:`SessionDescription` keeps every line byte-exact
  and parses ``o=``, ``c=`` and ``m=`` (RFC 4566 §5.2, §5.7, §5.14) on demand;
  :func:`accepts_media` tells whether an answer leaves a stream that can carry a conversation.
* Offer/answer per dialog (RFC 3261 §13.2.1, §13.3.1, §14; RFC 3264 §4): :class:`OfferAnswer`
  tracks whether an offer is outstanding and in which message it travelled, so the
  user-agent core can refuse a second offer with 491 and know where the answer must go.
* Relaying between the legs of a 3PCC call (RFC 3725): :func:`relayed_to_leg` makes what one
  phone sees look like one session from one peer (RFC 3264 §8: the first origin kept, the
  version up by one exactly when the description changed); :func:`pad_media` /
  :func:`truncate_media`: a new offer keeps the session's m-lines, an answer has its offer's.
* Answers of our own (one builder, :func:`_our_answer`): :func:`held_answer`, Flow IV's answer1
  holding every offered stream; :func:`ringback_answer`, accepting the audio stream that
  :func:`audio_destination` chose, to which the daemon's own RTP (ringback, failure tones)
  goes.

The daemon relays the phones' media descriptions and, for ringback, sends RTP itself
(clicktodial.media); this module only reads and writes descriptions. Pure: no Twisted
imports. Bodies that do not parse as SDP are relayed unchanged.
"""

from __future__ import annotations

import enum
import ipaddress
import secrets
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import TYPE_CHECKING

import attrs

from clicktodial.sip.wirecache import BoundedCache

SDP_CONTENT_TYPE = "application/sdp"


class SDPParseError(ValueError):
    """A session description is malformed in a way this module cares about."""


@attrs.frozen
class Origin:
    """The ``o=`` line (RFC 4566 §5.2)."""

    username: str
    session_id: str
    session_version: int
    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Origin:
        """Parse the value of an ``o=`` line (without the ``o=``)."""
        return cls(*_origin_fields(value))

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@attrs.frozen
class Connection:
    """A ``c=`` line (RFC 4566 §5.7)."""

    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Connection:
        """Parse the value of a ``c=`` line (without the ``c=``)."""
        parts = value.split()
        if len(parts) != 3:
            raise SDPParseError(f"c= line needs 3 fields, got {len(parts)}: {value!r}")
        return cls(parts[0], parts[1], parts[2])

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@attrs.frozen
class Media:
    """An ``m=`` line (RFC 4566 §5.14); ``port`` 0 means a rejected stream."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None

    @classmethod
    def parse(cls, value: str) -> Media:
        """Parse the value of an ``m=`` line (without the ``m=``)."""
        parts = value.split()
        if len(parts) < 3:
            raise SDPParseError(f"m= line needs at least 3 fields: {value!r}")
        port_text, _, count_text = parts[1].partition("/")
        try:
            port = int(port_text)
            count = int(count_text) if count_text else None
        except ValueError:
            raise SDPParseError(f"m= port is not a number: {parts[1]!r}") from None
        return cls(parts[0], port, parts[2], tuple(parts[3:]), count)

    def __str__(self) -> str:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        return " ".join([self.media, port, self.proto, *self.formats])


def _origin_fields(value: str) -> tuple[str, str, int, str, str, str]:
    """The fields of an ``o=`` line's value, checked (:meth:`Origin.parse`)."""
    parts = value.split()
    if len(parts) != 6:
        raise SDPParseError(f"o= line needs 6 fields, got {len(parts)}: {value!r}")
    try:
        version = int(parts[2])
    except ValueError:
        raise SDPParseError(f"o= session version is not a number: {parts[2]!r}") from None
    return parts[0], parts[1], version, parts[3], parts[4], parts[5]


_new = object.__new__


class SessionDescription:
    """
    A session description as an ordered list of ``(type, value)`` lines.

    Lines this module does not interpret are kept exactly; the accessors
    parse ``o=``, ``c=`` and ``m=`` on demand (the origin once: a description
    is read several times on the way through a call).  Instances are
    immutable: the ``with_*`` methods return modified copies.
    """

    # (A plain class, not attrs: parse() builds one without calling __init__ and knows
    # where its o= line is; a relayed description is read several times per call.)
    __slots__ = ("_lines", "_origin_at", "_origin", "_media")

    _lines: tuple[tuple[str, str], ...]
    #: The index of the first o= line, -1 if there is none, None until looked for.
    _origin_at: int | None
    # What the accessors parsed, kept: the lines never change.
    _origin: Origin | None
    _media: tuple[tuple[Media, Connection | None], ...] | None

    def __init__(self, lines: Iterable[tuple[str, str]]) -> None:
        self._lines = tuple(lines)
        self._origin_at = None
        self._origin = None
        self._media = None

    if TYPE_CHECKING:

        @property
        def lines(self) -> tuple[tuple[str, str], ...]:
            """The ``(type, value)`` lines, in order."""

    else:
        lines = property(attrgetter("_lines"), doc="The ``(type, value)`` lines, in order.")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionDescription):
            return NotImplemented
        return self._lines == other._lines

    def __hash__(self) -> int:
        return hash(self._lines)

    def __repr__(self) -> str:
        return f"SessionDescription(lines={self._lines!r})"

    @classmethod
    def parse(cls, body: bytes | str) -> SessionDescription:
        """Parse an SDP body; accepts CRLF or bare LF line ends (RFC 4566 §5).

        The ``o=`` line must be present and well formed (:meth:`Origin.parse`). A body
        (bytes) parsed a moment ago gives the same (immutable) description again.
        """
        if isinstance(body, bytes):
            known = _DESCRIPTIONS.get(body)
            if known is not None:
                return known
            text = body.decode("utf-8", "surrogateescape")
        else:
            text = body
        lines: list[tuple[str, str]] = []
        origin_at = -1
        for raw in text.splitlines():
            if not raw.strip():
                continue
            kind, sep, value = raw.partition("=")
            if not sep or len(kind) != 1:
                raise SDPParseError(f"not a type=value SDP line: {raw!r}")
            if kind == "o" and origin_at < 0:
                origin_at = len(lines)
            lines.append((kind, value))
        if not lines or lines[0] != ("v", "0"):
            raise SDPParseError("an SDP body must start with v=0")
        if origin_at < 0:
            raise SDPParseError("SDP has no o= line")
        _origin_fields(lines[origin_at][1])  # checked now, an Origin made when asked for
        session = _new(cls)
        session._lines = tuple(lines)
        session._origin_at = origin_at
        session._origin = None
        session._media = None
        if isinstance(body, bytes):
            _DESCRIPTIONS_SEEN.remember(body, session)
        return session

    def serialize(self) -> bytes:
        """The description as bytes with CRLF line ends."""
        # (Built-ins only: no Python-level call per line.)
        text = "\r\n".join(map("=".join, self._lines))
        return (text + "\r\n" if text else text).encode("utf-8", "surrogateescape")

    # -- accessors ---------------------------------------------------------

    def _first_index(self, kind: str) -> int | None:
        for index, (line_kind, _) in enumerate(self._lines):
            if line_kind == kind:
                return index
        return None

    def _origin_index(self) -> int:
        index = self._origin_at
        if index is None:
            found = self._first_index("o")
            index = self._origin_at = -1 if found is None else found
        if index < 0:
            raise SDPParseError("SDP has no o= line")
        return index

    def _media_start(self) -> int:
        index = self._first_index("m")
        return len(self._lines) if index is None else index

    @property
    def origin(self) -> Origin:
        """The ``o=`` line; raises `SDPParseError` if absent."""
        origin = self._origin
        if origin is None:
            origin = Origin(*_origin_fields(self._lines[self._origin_index()][1]))
            self._origin = origin
        return origin

    @property
    def connection(self) -> Connection | None:
        """The session-level ``c=`` line, if any."""
        for kind, value in self._lines[: self._media_start()]:
            if kind == "c":
                return Connection.parse(value)
        return None

    @property
    def media(self) -> list[tuple[Media, Connection | None]]:
        """Each ``m=`` line with its media-level ``c=`` line (or None)."""
        media = self._media
        if media is None:
            result: list[tuple[Media, Connection | None]] = []
            for kind, value in self._lines:
                if kind == "m":
                    result.append((Media.parse(value), None))
                elif kind == "c" and result and result[-1][1] is None:
                    result[-1] = (result[-1][0], Connection.parse(value))
            media = self._media = tuple(result)
        return list(media)

    # -- modifications -----------------------------------------------------

    def _replace_line(self, index: int, kind: str, value: str) -> SessionDescription:
        lines = list(self._lines)
        lines[index] = (kind, value)
        return SessionDescription(lines)

    def with_origin(self, origin: Origin) -> SessionDescription:
        """A copy with the ``o=`` line replaced."""
        index = self._origin_index()
        lines = list(self._lines)
        lines[index] = ("o", str(origin))
        session = _new(SessionDescription)
        session._lines = tuple(lines)
        session._origin_at = index
        session._origin = None
        session._media = None
        return session

    def with_bumped_version(self) -> SessionDescription:
        """A copy with the ``o=`` session version incremented (RFC 3264 §8)."""
        origin = self.origin
        return self.with_origin(attrs.evolve(origin, session_version=origin.session_version + 1))

    def with_connection_address(
        self, address: str, addrtype: str | None = None
    ) -> SessionDescription:
        """
        A copy with every ``c=`` line (session and media level) set to
        ``address``; ``addrtype`` (``IP4``/``IP6``) defaults to a guess from
        the address.
        """
        kind = addrtype or ("IP6" if ":" in address else "IP4")
        lines = [
            (line_kind, str(attrs.evolve(Connection.parse(value), addrtype=kind, address=address)))
            if line_kind == "c"
            else (line_kind, value)
            for line_kind, value in self._lines
        ]
        return SessionDescription(lines)

    def with_media_port(self, media_index: int, port: int) -> SessionDescription:
        """A copy with the port of the ``media_index``-th ``m=`` line changed (0 rejects it)."""
        seen = -1
        for index, (kind, value) in enumerate(self._lines):
            if kind == "m":
                seen += 1
                if seen == media_index:
                    return self._replace_line(
                        index, "m", str(attrs.evolve(Media.parse(value), port=port))
                    )
        raise IndexError(f"no m= line number {media_index}")


# Descriptions parsed, by body: the call controller reads a body it relays several times
# (its m= lines counted, padded, then relayed), and a leg's last description again when the
# next one goes out. Bounded (clicktodial.sip.wirecache); a few hundred in-flight bodies.
_DESCRIPTIONS_SEEN: BoundedCache[bytes, SessionDescription] = BoundedCache(
    "sdp.descriptions", limit=256
)
_DESCRIPTIONS = _DESCRIPTIONS_SEEN.entries


#: Encodings that ride along with a codec but carry no conversation on their own:
#: DTMF (RFC 4733), comfort noise (RFC 3389), redundancy (RFC 2198), FEC (RFC 5109).
_COMPANION_ENCODINGS = frozenset({"telephone-event", "cn", "red", "ulpfec"})
#: RFC 3551 static payload type 13 is comfort noise.
_STATIC_COMFORT_NOISE = "13"


def _carries_media(section: list[tuple[str, str]]) -> bool:
    media = Media.parse(section[0][1])
    if media.port == 0:
        return False
    encodings = {}
    for kind, value in section[1:]:
        if kind == "a" and value.startswith("rtpmap:"):
            payload, _, encoding = value[len("rtpmap:") :].partition(" ")
            encodings[payload] = encoding.split("/", 1)[0].strip().lower()
    # (Loops, not any() over generators, here and in accepts_media: no call per item.)
    for fmt in media.formats:
        if encodings.get(fmt, "") not in _COMPANION_ENCODINGS and fmt != _STATIC_COMFORT_NOISE:
            return True
    return False


def accepts_media(answer: bytes) -> bool:
    """
    Whether an answer keeps at least one media stream that can carry a conversation:
    not rejected (RFC 3264 §6: port 0) and with at least one format other than DTMF,
    comfort noise, redundancy or FEC. Phones sharing no codec answer with every stream
    rejected, or (baresip) with only telephone-event left. An answer that does not parse
    is not judged here (True).
    """
    try:
        _, sections = split_sections(SessionDescription.parse(answer))
        if not sections:
            return True
        for section in sections:
            if _carries_media(section):
                return True
        return False
    except SDPParseError:
        return True


def is_sdp(content_type: str | None, body: bytes) -> bool:
    """Whether a message body is a session description (non-empty, application/sdp)."""
    if not body:
        return False
    if content_type is None:
        # RFC 3261 §20.15: a body without Content-Type is malformed; for
        # offer/answer bookkeeping, treat it as SDP rather than losing it.
        return True
    return content_type.split(";", 1)[0].strip().lower() == SDP_CONTENT_TYPE


class OfferAnswerError(Exception):
    """An offer/answer step is not allowed in the current state (RFC 3264 §4)."""


class Party(enum.Enum):
    """Which side made the outstanding offer."""

    LOCAL = "local"
    REMOTE = "remote"


class OfferCarrier(enum.Enum):
    """The message an outstanding offer travelled in (RFC 3261 §13.2.1)."""

    INVITE = "INVITE"
    RESPONSE_2XX = "2xx"
    UPDATE = "UPDATE"


@attrs.frozen
class PendingOffer:
    """An offer that has been made and not yet answered."""

    by: Party
    carrier: OfferCarrier
    sdp: bytes


class OfferAnswer:
    """
    Offer/answer state for one dialog (RFC 3264 §4, as RFC 3261 §13 uses it).

    At most one offer is outstanding at a time.  The user-agent core calls
    `offer` when an offer is sent or received and `answer` when the answer
    goes the other way; `withdraw` drops an offer whose transaction failed
    (RFC 3261 §14.1: a failed re-INVITE leaves the session unchanged).
    ``local_sdp``/``remote_sdp`` hold the last descriptions each side sent
    in a completed exchange; a B2BUA relays those.
    """

    __slots__ = ("pending", "local_sdp", "remote_sdp", "completed_exchanges")

    def __init__(self) -> None:
        self.pending: PendingOffer | None = None
        self.local_sdp: bytes | None = None
        self.remote_sdp: bytes | None = None
        self.completed_exchanges = 0

    def __repr__(self) -> str:
        return f"<OfferAnswer pending={self.pending!r} exchanges={self.completed_exchanges}>"

    @property
    def offer_outstanding(self) -> bool:
        """Whether an offer has been made and not yet answered."""
        return self.pending is not None

    def offer(self, by: Party, carrier: OfferCarrier, sdp: bytes) -> None:
        """Record an offer sent (``by`` LOCAL) or received (REMOTE)."""
        if self.pending is not None:
            # RFC 3264 §4: no new offer until the previous one is answered;
            # RFC 3261 §14.2 turns this into 491 for a re-INVITE.
            raise OfferAnswerError(f"an offer from the {self.pending.by.value} side is outstanding")
        self.pending = PendingOffer(by, carrier, sdp)

    def answer(self, by: Party, sdp: bytes) -> None:
        """Record the answer to the outstanding offer, sent by ``by``."""
        pending = self.pending
        if pending is None:
            raise OfferAnswerError("no offer is outstanding")
        if pending.by is by:
            raise OfferAnswerError(f"the {by.value} side cannot answer its own offer")
        if by is Party.LOCAL:
            self.local_sdp, self.remote_sdp = sdp, pending.sdp
        else:
            self.local_sdp, self.remote_sdp = pending.sdp, sdp
        self.pending = None
        self.completed_exchanges += 1

    def withdraw(self) -> None:
        """Forget the outstanding offer (its transaction failed)."""
        self.pending = None

    def expects_answer_from(self, by: Party) -> bool:
        """Whether ``by`` owes an answer to an outstanding offer."""
        return self.pending is not None and self.pending.by is not by


def split_sections(
    sdp: SessionDescription,
) -> tuple[list[tuple[str, str]], list[list[tuple[str, str]]]]:
    """Session-level lines and the lines of each media section (each starting at its m=)."""
    session: list[tuple[str, str]] = []
    sections: list[list[tuple[str, str]]] = []
    for line in sdp.lines:
        if line[0] == "m":
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    return session, sections


# -- relaying between the legs of a 3PCC call (RFC 3725) ---------------------------------


def relayed_to_leg(sent: bytes | None, body: bytes) -> bytes | None:
    """
    ``body`` as the phone of a leg that was last sent ``sent`` must see it: one session
    from one peer (RFC 3264 §8), so ``sent``'s origin is kept and its version goes up by
    one exactly when the description changed; ``body`` itself when it is the first
    (``sent`` None).  None when ``body`` is not SDP (relayed unchanged, not kept as sent).

    A leg keeps only the bytes this returned, for the whole call (the same object is the
    local description of its dialog's offer/answer state): the origin and the m= lines
    are parsed again only when an offer is padded or the description changes (an Origin
    and a list of Media cost ~1.3 KB a leg).
    """
    try:
        sdp = SessionDescription.parse(body)  # (which checks the o= line)
        sdp.media  # noqa: B018 - validate the m= lines parsed again later
    except SDPParseError:
        return None
    if sent is None:
        return body
    # Our own output: it parsed before it was sent.
    last = SessionDescription.parse(sent)
    kept = last.origin
    if [line for line in sdp.lines if line[0] != "o"] != [
        line for line in last.lines if line[0] != "o"
    ]:
        kept = attrs.evolve(kept, session_version=kept.session_version + 1)
    return sdp.with_origin(kept).serialize()


def sent_origin(sent: bytes | None) -> Origin | None:
    """The origin of ``sent`` (what :func:`relayed_to_leg` returned), None before any."""
    return SessionDescription.parse(sent).origin if sent is not None else None


def sent_media(sent: bytes | None) -> list[Media]:
    """The m= lines of ``sent`` (for :func:`pad_media`), none before any."""
    return [media for media, _ in SessionDescription.parse(sent).media] if sent else []


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
    return SessionDescription(lines).serialize()


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
    return SessionDescription(lines).serialize()


# -- answers of our own (RFC 3264 §6) ----------------------------------------------------

#: What an answer of ours says for one offered stream: its m= line and attribute lines,
#: or None to reject it (port 0). Called with the stream's index, m= line and section.
StreamAnswer = Callable[[int, Media, list[tuple[str, str]]], list[tuple[str, str]] | None]


def _our_answer(
    offer: SessionDescription, address: str, addrtype: str, username: str, stream: StreamAnswer
) -> bytes:
    """
    An answer of ours to ``offer``: our own session lines (a fresh session id, version 1,
    ``c=`` ``address``), then per offered m-line what ``stream`` says, or the m-line
    rejected with port 0: the answer has exactly the offer's m-lines (RFC 3264 §6).
    """
    session_id = str(secrets.randbelow(2**31) + 1)
    lines: list[tuple[str, str]] = [
        ("v", "0"),
        ("o", f"{username} {session_id} 1 IN {addrtype} {address}"),
        ("s", "-"),
        ("c", f"IN {addrtype} {address}"),
        ("t", "0 0"),
    ]
    _, sections = split_sections(offer)
    for index, section in enumerate(sections):
        media = Media.parse(section[0][1])
        accepted = stream(index, media, section)
        if accepted is None:
            lines.append(("m", str(attrs.evolve(media, port=0, port_count=None))))
        else:
            lines.extend(accepted)
    return SessionDescription(lines).serialize()


def held_answer(offer: bytes, username: str = "clicktodial") -> bytes:
    """
    An answer to ``offer`` that holds every stream (RFC 3725 §5 Flow IV
    answer1): each offered stream accepted with its first format, on the
    discard port, connection address 0.0.0.0 (RFC 3264 §8.4 hold) and
    ``a=inactive``; rejected streams stay rejected.

    :raises SDPParseError: ``offer`` is not SDP.
    """
    sdp = SessionDescription.parse(offer)
    connection = sdp.connection or next((c for _, c in sdp.media if c is not None), None)
    ip6 = connection is not None and connection.addrtype.upper() == "IP6"
    addrtype, address = ("IP6", "::") if ip6 else ("IP4", "0.0.0.0")

    def hold(
        index: int, media: Media, section: list[tuple[str, str]]
    ) -> list[tuple[str, str]] | None:
        if media.port == 0 or not media.formats:
            return None
        fmt = media.formats[0]
        lines = [("m", str(attrs.evolve(media, port=9, formats=(fmt,), port_count=None)))]
        lines += [
            (kind, value)
            for kind, value in section[1:]
            if kind == "a" and value.startswith((f"rtpmap:{fmt} ", f"fmtp:{fmt} "))
        ]
        lines.append(("a", "inactive"))
        return lines

    return _our_answer(sdp, address, addrtype, username, hold)


class NoUsableMedia(ValueError):
    """The offer has no audio stream we can send G.711 to; the message says why."""


#: RFC 3551 §6: the static payload types of G.711, by number.
_G711_STATIC = {"0": "PCMU", "8": "PCMA"}

_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@attrs.frozen
class AudioOffer:
    """
    The audio stream of an offer that we will send to.

    :ivar index: the position of its ``m=`` line among the offer's m-lines.
    :ivar host: the unicast address to send to.
    :ivar port: the RTP port to send to.
    :ivar encoding: ``PCMU`` or ``PCMA`` (the ``a=rtpmap`` encoding name, RFC 3551 §6).
    :ivar payload_type: the number the offer gave the codec (0/8, or a dynamic one
        mapped by ``a=rtpmap``).
    """

    index: int
    host: str
    port: int
    encoding: str
    payload_type: int

    @property
    def destination(self) -> tuple[str, int]:
        """``(host, port)``."""
        return self.host, self.port


def check_destination(host: str, port: int) -> tuple[str, int]:
    """
    A unicast IP address literal and a port 1-65535, as a media destination.

    :raises ValueError: anything else (a hostname, ``0.0.0.0`` hold, multicast, port 0).
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"RTP destination {host!r} is not an IP address") from None
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"RTP destination {host!r} is not a unicast address")
    if not 1 <= port <= 65535:
        raise ValueError(f"RTP destination port {port} is out of range")
    return address.compressed, port


def _direction(lines: list[tuple[str, str]]) -> str | None:
    for kind, value in lines:
        if kind == "a" and value in _DIRECTIONS:
            return value
    return None


def _g711_format(media: Media, lines: list[tuple[str, str]]) -> tuple[str, int] | None:
    # RFC 3551 §6: 0 and 8 are static; an a=rtpmap may also give a dynamic number to them.
    mapped: dict[str, str] = {}
    for kind, value in lines:
        if kind == "a" and value.startswith("rtpmap:"):
            number, _, encoding = value[len("rtpmap:") :].partition(" ")
            name, _, rest = encoding.strip().partition("/")
            clock = rest.partition("/")[0]
            if name.upper() in ("PCMU", "PCMA") and clock == "8000":
                mapped[number] = name.upper()
    for fmt in media.formats:
        if fmt in mapped:
            return mapped[fmt], int(fmt)
        if fmt in _G711_STATIC:
            return _G711_STATIC[fmt], int(fmt)
    return None


def audio_destination(offer: bytes) -> AudioOffer:
    """
    The first audio stream of ``offer`` that we can send G.711 to: where it asks its
    audio to be sent (RFC 4566 §5.7, §5.14: the ``c=`` address, media-level over
    session-level, and the ``m=audio`` port) and the first of PCMU/PCMA in the offer's
    order of preference (RFC 3264 §5.1).

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

    def send(
        index: int, media: Media, section: list[tuple[str, str]]
    ) -> list[tuple[str, str]] | None:
        if index != chosen.index:
            return None
        fmt = str(chosen.payload_type)
        return [
            ("m", str(attrs.evolve(media, port=port, formats=(fmt,), port_count=None))),
            ("a", f"rtpmap:{fmt} {chosen.encoding}/8000"),
            ("a", "ptime:20"),
            ("a", direction),
        ]

    return _our_answer(sdp, address, addrtype, username, send)
