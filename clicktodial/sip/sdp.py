"""
Minimal SDP handling and offer/answer bookkeeping for the dialog layer.

clicktodial relays SDP between two legs (RFC 3725 third-party call control);
it never handles media itself.  So this module only needs to:

* read and rewrite the ``o=``, ``c=`` and ``m=`` lines of a session
  description (RFC 4566 §5.2, §5.7, §5.14), keeping every other line
  byte-exact, and bump the ``o=`` version when a description changes
  (RFC 3264 §8: "the version in the origin field MUST increment by one");
* track, per dialog, whether an offer is outstanding and in which message it
  travelled (RFC 3261 §13.2.1, §13.3.1, §14; RFC 3264 §4), so the user-agent
  core can refuse a second offer with 491 and know where the answer must go.

This module is pure: no Twisted imports.
"""

from __future__ import annotations

import enum

import attrs

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
        parts = value.split()
        if len(parts) != 6:
            raise SDPParseError(f"o= line needs 6 fields, got {len(parts)}: {value!r}")
        try:
            version = int(parts[2])
        except ValueError:
            raise SDPParseError(f"o= session version is not a number: {parts[2]!r}") from None
        return cls(parts[0], parts[1], version, parts[3], parts[4], parts[5])

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


@attrs.frozen
class SessionDescription:
    """
    A session description as an ordered list of ``(type, value)`` lines.

    Lines this module does not interpret are kept exactly; the accessors
    parse ``o=``, ``c=`` and ``m=`` on demand.  Instances are immutable: the
    ``with_*`` methods return modified copies.
    """

    lines: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, body: bytes | str) -> SessionDescription:
        """Parse an SDP body; accepts CRLF or bare LF line ends (RFC 4566 §5)."""
        text = body.decode("utf-8", "surrogateescape") if isinstance(body, bytes) else body
        lines: list[tuple[str, str]] = []
        for raw in text.splitlines():
            if not raw.strip():
                continue
            kind, sep, value = raw.partition("=")
            if not sep or len(kind) != 1:
                raise SDPParseError(f"not a type=value SDP line: {raw!r}")
            lines.append((kind, value))
        if not lines or lines[0] != ("v", "0"):
            raise SDPParseError("an SDP body must start with v=0")
        session = cls(tuple(lines))
        session.origin  # noqa: B018 - validate that o= is present and well-formed
        return session

    def serialize(self) -> bytes:
        """The description as bytes with CRLF line ends."""
        text = "".join(f"{kind}={value}\r\n" for kind, value in self.lines)
        return text.encode("utf-8", "surrogateescape")

    # -- accessors ---------------------------------------------------------

    def _first_index(self, kind: str) -> int | None:
        for index, (line_kind, _) in enumerate(self.lines):
            if line_kind == kind:
                return index
        return None

    def _media_start(self) -> int:
        index = self._first_index("m")
        return len(self.lines) if index is None else index

    @property
    def origin(self) -> Origin:
        """The ``o=`` line; raises `SDPParseError` if absent."""
        index = self._first_index("o")
        if index is None:
            raise SDPParseError("SDP has no o= line")
        return Origin.parse(self.lines[index][1])

    @property
    def connection(self) -> Connection | None:
        """The session-level ``c=`` line, if any."""
        for kind, value in self.lines[: self._media_start()]:
            if kind == "c":
                return Connection.parse(value)
        return None

    @property
    def media(self) -> list[tuple[Media, Connection | None]]:
        """Each ``m=`` line with its media-level ``c=`` line (or None)."""
        result: list[tuple[Media, Connection | None]] = []
        for kind, value in self.lines:
            if kind == "m":
                result.append((Media.parse(value), None))
            elif kind == "c" and result and result[-1][1] is None:
                result[-1] = (result[-1][0], Connection.parse(value))
        return result

    # -- modifications -----------------------------------------------------

    def _replace_line(self, index: int, kind: str, value: str) -> SessionDescription:
        lines = list(self.lines)
        lines[index] = (kind, value)
        return SessionDescription(tuple(lines))

    def with_origin(self, origin: Origin) -> SessionDescription:
        """A copy with the ``o=`` line replaced."""
        index = self._first_index("o")
        if index is None:
            raise SDPParseError("SDP has no o= line")
        return self._replace_line(index, "o", str(origin))

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
            for line_kind, value in self.lines
        ]
        return SessionDescription(tuple(lines))

    def with_media_port(self, media_index: int, port: int) -> SessionDescription:
        """A copy with the port of the ``media_index``-th ``m=`` line changed (0 rejects it)."""
        seen = -1
        for index, (kind, value) in enumerate(self.lines):
            if kind == "m":
                seen += 1
                if seen == media_index:
                    return self._replace_line(
                        index, "m", str(attrs.evolve(Media.parse(value), port=port))
                    )
        raise IndexError(f"no m= line number {media_index}")


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
            payload, _, encoding = value[len("rtpmap:"):].partition(" ")
            encodings[payload] = encoding.split("/", 1)[0].strip().lower()
    return any(
        encodings.get(fmt, "") not in _COMPANION_ENCODINGS and fmt != _STATIC_COMFORT_NOISE
        for fmt in media.formats
    )


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
        return not sections or any(_carries_media(section) for section in sections)
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
