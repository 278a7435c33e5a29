"""Structured SIP header values: Via, name-addr (From/To/Contact/Route...), CSeq.

Pure wire-format code: no Twisted imports. Each parser takes the header value
text (after unfolding) and raises :class:`HeaderParseError`, a ``ValueError``,
when it does not follow RFC 3261 §25.1.

Header parameter names are stored lower-cased (they are case-insensitive);
values are stored as written, quotes included for a quoted-string value, so a
value re-serializes unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from operator import attrgetter
from typing import TYPE_CHECKING

from clicktodial.sip.uri import URI, HeaderParseError, URIParseError, parse_uri
from clicktodial.sip.wirecache import BoundedCache

__all__ = [
    "HeaderParseError",
    "Via",
    "NameAddr",
    "CSeq",
    "parse_via",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_cseq",
    "parse_params",
    "split_commas",
    "format_params",
    "quote_string",
    "MAX_CSEQ",
]

#: RFC 3261 §8.1.1.5: the CSeq sequence number MUST be less than 2**31.
MAX_CSEQ = 2**31 - 1


_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
# quoted-string as an "unrolled loop" (fast in CPython's re).
_QUOTED = r'"[^"\\\r\n]*(?:\\[^\r\n][^"\\\r\n]*)*"'
# One ";name[=value]" with LWS allowed around ";" and "=" (RFC 3261 §25.1 SEMI, EQUAL).
# A value is a token, a host (IPv6 references and received=IPv6 without
# brackets, RFC 5118 §4.5) or a quoted-string.
_PARAMS_RE = re.compile(
    r"(?:[ \t]*;[ \t]*"
    + _TOKEN
    + r"(?:[ \t]*=[ \t]*(?:"
    + _QUOTED
    + r"|[A-Za-z0-9\-.!%*_+`'~:\[\]]+))?)*[ \t]*"
)
_PARAM_ITEM_RE = re.compile(
    r";[ \t]*(" + _TOKEN + r")(?:[ \t]*=[ \t]*(" + _QUOTED + r"|[A-Za-z0-9\-.!%*_+`'~:\[\]]+))?"
)
# name-addr / addr-spec with its parameters, in one pass (RFC 3261 §20.10, §25.1).
_NAME_ADDR_RE = re.compile(
    r"[ \t]*(?:(?:(" + _QUOTED + r")|(" + _TOKEN + r"(?:[ \t]+" + _TOKEN + r")*))?[ \t]*"
    r"<([^<>\x00-\x20\"]+)>"
    r"|([A-Za-z][A-Za-z0-9+\-.]*:[^\x00-\x20\"<>;,?]+))"
    r"((?:[ \t]*;[ \t]*"
    + _TOKEN
    + r"(?:[ \t]*=[ \t]*(?:"
    + _QUOTED
    + r"|[A-Za-z0-9\-.!%*_+`'~:\[\]]+))?)*)[ \t]*"
)
_UNQUOTE_RE = re.compile(r"\\(.)", re.DOTALL)
_NEEDS_QUOTE_PAIR_RE = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')
_VIA_RE = re.compile(
    r"[ \t]*[Ss][Ii][Pp][ \t]*/[ \t]*2\.0[ \t]*/[ \t]*(" + _TOKEN + r")[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
    r"((?:[ \t]*;[ \t]*"
    + _TOKEN
    + r"(?:[ \t]*=[ \t]*(?:"
    + _QUOTED
    + r"|[A-Za-z0-9\-.!%*_+`'~:\[\]]+))?)*)[ \t]*"
)
_CSEQ_RE = re.compile(r"[ \t]*([0-9]{1,10})[ \t]+(" + _TOKEN + r")[ \t]*")


def split_commas(text: str) -> list[str]:
    """Split a header value on commas that are not inside quotes or ``<>`` (RFC 3261 §7.3.1).

    Items are stripped of surrounding whitespace; empty items are kept (as
    ``""``) so that a caller can reject them.
    """
    if "," not in text:
        return [text.strip()]
    if '"' not in text and "<" not in text:
        return [item.strip() for item in text.split(",")]
    items = []
    start = 0
    in_quotes = in_angle = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif in_angle:
            if c == ">":
                in_angle = False
        elif c == "<":
            in_angle = True
        elif c == ",":
            items.append(text[start:i].strip())
            start = i + 1
        i += 1
    items.append(text[start:].strip())
    return items


def parse_params(text: str, pos: int = 0) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` from *pos* to the end of *text* (generic-param list)."""
    if not _PARAMS_RE.fullmatch(text, pos):
        raise HeaderParseError(f"bad parameters {text[pos : pos + 40]!r}")
    return _params_of(text[pos:])


def _params_of(text: str) -> dict[str, str | None]:
    # *text* has been checked against the generic-param grammar.
    if '"' in text or " " in text or "\t" in text:
        return {name.lower(): value or None for name, value in _PARAM_ITEM_RE.findall(text)}
    # The usual ";name=value;flag": no quoted value, no whitespace, so every ";"
    # starts a parameter and its first "=" ends the name (a test holds this to
    # the regex above).
    params: dict[str, str | None] = {}
    for item in text[1:].split(";"):
        name, _, value = item.partition("=")
        params[name.lower()] = value or None
    return params


def format_params(params: Mapping[str, str | None]) -> str:
    """Write parameters as ``;name=value;flag``."""
    # (A loop, not a comprehension: no Python-level call.)
    text = ""
    for k, v in params.items():
        text += f";{k}" if v is None else f";{k}={v}"
    return text


def quote_string(text: str) -> str:
    """Write *text* as a quoted-string (RFC 3261 §25.1), quoted-pairs as needed."""
    if "\r" in text or "\n" in text:
        raise ValueError("CR and LF cannot appear in a quoted-string")
    if _NEEDS_QUOTE_PAIR_RE.search(text):
        text = _NEEDS_QUOTE_PAIR_RE.sub(lambda m: "\\" + m.group(0), text)
    return f'"{text}"'


class Via:
    """One Via header field value (RFC 3261 §20.42): ``SIP/2.0/UDP host:port;params``."""

    __slots__ = ("transport", "host", "port", "params")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: Mapping[str, str | None] | None = None,
    ) -> None:
        self.transport = transport.upper()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        self.host = host
        self.port = port
        # Names lower-cased (case-insensitive) with built-ins only: a comprehension
        # would cost a Python-level call for every one a UA builds.
        self.params: dict[str, str | None] = (
            dict(zip(map(str.lower, params), params.values(), strict=True)) if params else {}
        )

    @property
    def branch(self) -> str | None:
        """The transaction identifier (``z9hG4bK...`` for RFC 3261 elements), if any."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter (an address, IPv6 without brackets), if any."""
        return self.params.get("received")

    @property
    def rport(self) -> int | bool | None:
        """RFC 3581 ``rport``: ``None`` if absent, ``True`` without value, else the port."""
        if "rport" not in self.params:
            return None
        value = self.params["rport"]
        if value is None:
            return True
        try:
            return int(value)
        except ValueError:
            raise HeaderParseError(f"bad rport value {value!r}") from None

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter, if any."""
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        """The ``ttl`` parameter, if any."""
        value = self.params.get("ttl")
        return None if value is None else int(value)

    if TYPE_CHECKING:

        @property
        def sent_by(self) -> tuple[str, int | None]:
            """``(host, port)`` of the sent-by; host without brackets, port ``None`` if absent."""

    else:
        # (operator.attrgetter (C) as the getter: no Python call; read for every request.)
        sent_by = property(
            attrgetter("host", "port"),
            doc="``(host, port)`` of the sent-by; host without brackets, port ``None`` if absent.",
        )

    def serialize(self) -> str:
        """The header field value text."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = (
            f"SIP/2.0/{self.transport} {host}"
            if self.port is None
            else (f"SIP/2.0/{self.transport} {host}:{self.port}")
        )
        # (format_params written out: a UA writes a Via for every request it sends.)
        for k, v in self.params.items():
            text += f";{k}" if v is None else f";{k}={v}"
        return text

    __str__ = serialize

    def __repr__(self) -> str:
        return f"Via({self.serialize()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return (
            self.transport == other.transport
            and self.host.lower() == other.host.lower()
            and self.port == other.port
            and self.params == other.params
        )

    __hash__ = None  # type: ignore[assignment]


def parse_via(text: str) -> list[Via]:
    """Parse a Via header field value: one or more comma-separated via-parms."""
    if "," in text:
        return _parse_via(text)
    # (The shape, see below, found inline here and in parse_name_addr: a call less.)
    head, sep, rest = text.partition(";branch=")
    if not sep:
        return _parse_via(text)
    branch, semi, tail = rest.partition(";")
    if not (branch.isalnum() or (branch and not branch.strip(_UNRESERVED))) or not branch.isascii():
        return _parse_via(text)
    after = semi + tail
    shape = head + "\n" + after
    known = _VIA_SHAPES.get(shape)
    if known is not None:
        via = Via.__new__(Via)
        via.transport, via.host, via.port, params = known
        via.params = params = dict(params)
        params["branch"] = branch
        return [via]
    vias = _parse_via(text)
    via = vias[0]
    if _shape_reusable(via.params, "branch", branch, after):
        # (A copy: the caller may change the Via it is given.)
        _VIAS_BY_SHAPE.remember(shape, (via.transport, via.host, via.port, dict(via.params)))
    return vias


def _parse_via(text: str) -> list[Via]:
    vias = []
    for item in split_commas(text):
        m = _VIA_RE.fullmatch(item)
        if m is None:
            raise HeaderParseError(f"bad Via {item!r}")
        transport, host, port, ptext = m.groups()
        if port is not None and int(port) > 65535:
            raise HeaderParseError(f"bad Via port in {item!r}")
        via = Via.__new__(Via)
        via.transport = transport.upper()
        if host[0] == "[":
            host = host[1:-1]
            if ":" not in host:
                raise HeaderParseError(f"bad IPv6 reference in Via {item!r}")
        via.host = host
        via.port = int(port) if port is not None else None
        via.params = _params_of(ptext) if ptext else {}
        vias.append(via)
    return vias


class NameAddr:
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route...).

    ``display_name`` is unquoted (quoted-pairs resolved); ``None`` when absent.
    """

    __slots__ = ("uri", "display_name", "params")

    def __init__(
        self,
        uri: URI,
        display_name: str | None = None,
        params: Mapping[str, str | None] | None = None,
    ) -> None:
        self.uri = uri
        self.display_name = display_name
        # Names lower-cased (case-insensitive) with built-ins only: a comprehension
        # would cost a Python-level call for every one a UA builds.
        self.params: dict[str, str | None] = (
            dict(zip(map(str.lower, params), params.values(), strict=True)) if params else {}
        )

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (dialog identification, RFC 3261 §19.3), if any."""
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        """A copy with ``tag`` set."""
        params = dict(self.params)
        params["tag"] = tag
        return NameAddr(self.uri, self.display_name, params)

    def param(self, name: str) -> str | None:
        """A header parameter's value, quotes removed (``None`` if absent or valueless)."""
        value = self.params.get(name.lower())
        if value is not None and value.startswith('"'):
            return _UNQUOTE_RE.sub(r"\1", value[1:-1])
        return value

    @property
    def expires(self) -> int | None:
        """The Contact ``expires`` parameter as an int, if present."""
        value = self.params.get("expires")
        if value is None:
            return None
        if not value.isdigit() or not value.isascii():
            raise HeaderParseError(f"bad expires parameter {value!r}")
        return int(value)

    @property
    def q(self) -> float | None:
        """The Contact ``q`` parameter as a float in [0, 1], if present."""
        value = self.params.get("q")
        if value is None:
            return None
        try:
            q = float(value)
        except ValueError:
            raise HeaderParseError(f"bad q parameter {value!r}") from None
        if not 0.0 <= q <= 1.0:
            raise HeaderParseError(f"q parameter out of range: {value!r}")
        return q

    def serialize(self, with_params: bool = True) -> str:
        """The header field value text (always in ``<>`` form); without the header
        parameters when not *with_params* (what a dialog keeps of a From or To)."""
        params = format_params(self.params) if with_params and self.params else ""
        display = self.display_name
        if display is None:
            return f"<{self.uri.text}>{params}"
        if "\r" in display or "\n" in display or _NEEDS_QUOTE_PAIR_RE.search(display):
            display = quote_string(display)  # (quoted-pairs, or refused)
        else:
            display = f'"{display}"'  # (quote_string's usual case, written out)
        return f"{display} <{self.uri.text}>{params}"

    __str__ = serialize

    def __repr__(self) -> str:
        return f"NameAddr({self.serialize()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (
            self.uri == other.uri
            and self.display_name == other.display_name
            and self.params == other.params
        )

    __hash__ = None  # type: ignore[assignment]


def parse_name_addr(text: str) -> NameAddr:
    """Parse one name-addr / addr-spec with its header parameters (RFC 3261 §20.10).

    Without ``<>``, every ``;parameter`` after the URI is a header parameter,
    not a URI parameter (RFC 3261 §20.10, RFC 4475 §3.3.12).
    """
    # (The shape, see below, found inline here and in parse_via: a call less for every From, To
    # and Contact read.)
    head, sep, rest = text.partition(";tag=")
    if sep:
        tag, semi, tail = rest.partition(";")
        if not (tag.isalnum() or (tag and not tag.strip(_UNRESERVED))) or not tag.isascii():
            return _parse_name_addr(text)
        after = semi + tail
        shape = head + "\n" + after
    elif "\n" not in text:
        # No tag (a To outside a dialog, a Contact): the text is its own shape; a
        # shape has a LF, a text read from a message never has one.
        tag = after = ""
        shape = text
    else:
        return _parse_name_addr(text)
    known = _NAME_ADDR_SHAPES.get(shape)
    if known is not None:
        na = NameAddr.__new__(NameAddr)
        na.uri, na.display_name, params = known
        na.params = params = dict(params)
        if sep:
            params["tag"] = tag
        return na
    na = _parse_name_addr(text)
    if not sep or _shape_reusable(na.params, "tag", tag, after):
        _NAME_ADDRS_BY_SHAPE.remember(shape, (na.uri, na.display_name, dict(na.params)))
    return na


# Vias and name-addrs parsed, by shape: the text with the value of its
# ";branch=" / ";tag=" left out (see below), or for a name-addr without
# ";tag=" its whole text. A UA's Vias differ only in the branch, a user's
# From/To only in the tag, a To outside a dialog and a Contact not at all: the
# rest is parsed once. What is kept is copied into each new object (the URI is
# immutable, shared). Bounded (clicktodial.sip.wirecache).
_VIAS_BY_SHAPE: BoundedCache[str, tuple[str, str, int | None, dict[str, str | None]]] = (
    BoundedCache("sip.vias-by-shape")
)
_NAME_ADDRS_BY_SHAPE: BoundedCache[str, tuple[URI, str | None, dict[str, str | None]]] = (
    BoundedCache("sip.name-addrs-by-shape")
)
_VIA_SHAPES = _VIAS_BY_SHAPE.entries
_NAME_ADDR_SHAPES = _NAME_ADDRS_BY_SHAPE.entries
_UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"


# The shape of a text (parse_via and parse_name_addr find it, each written out):
# when the text has the split (";branch=", ";tag=") followed by a value of
# unreserved characters (ASCII letters, digits, "-._~"), up to the next ";",
# its shape is the text with that value left out: head + "\n" + what follows.
# Wherever such a value stands after "=" in these grammars it is a run of
# characters any of which (and any number of which) the grammar accepts there,
# so texts of one shape parse alike but for that value.


def _shape_reusable(params: dict[str, str | None], name: str, value: str, after: str) -> bool:
    """Whether a parse of a text of this shape serves every text of it: the value
    found for *name* is the one after the split (*value*, followed by *after*: no
    other parameter of that name follows it, none is quoted or spaced, so the
    parameters were read by splitting)."""
    if params.get(name) != value or name in after.lower():
        return False
    # (A loop, not any() over a generator: a call less.)
    for v in params.values():
        if v is not None and ('"' in v or " " in v or "\t" in v):
            return False
    return True


def _parse_name_addr(text: str) -> NameAddr:
    m = _NAME_ADDR_RE.fullmatch(text)
    if m is None:
        raise HeaderParseError(f"bad name-addr {text.strip()!r}")
    quoted, tokens, uri_text, addr_spec, ptext = m.groups()
    if quoted is not None:
        display: str | None = quoted[1:-1]
        if "\\" in quoted:
            display = _UNQUOTE_RE.sub(r"\1", quoted[1:-1])
    else:
        display = tokens
    try:
        uri = parse_uri(uri_text if uri_text is not None else addr_spec)
    except URIParseError as e:
        raise HeaderParseError(str(e)) from None
    na = NameAddr.__new__(NameAddr)
    na.uri = uri
    na.display_name = display
    na.params = _params_of(ptext) if ptext else {}
    return na


def parse_name_addr_list(text: str) -> list[NameAddr]:
    """Parse a comma-separated list of name-addrs (Contact, Route, Record-Route)."""
    return list(map(parse_name_addr, split_commas(text)))


class CSeq:
    """The CSeq header (RFC 3261 §20.16): sequence number and method."""

    __slots__ = ("seq", "method")

    def __init__(self, seq: int, method: str) -> None:
        self.seq = seq
        self.method = method

    def serialize(self) -> str:
        """The header field value text."""
        return f"{self.seq} {self.method}"

    __str__ = serialize

    def __repr__(self) -> str:
        return f"CSeq({self.seq!r}, {self.method!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CSeq):
            return NotImplemented
        return self.seq == other.seq and self.method == other.method

    def __hash__(self) -> int:
        return hash((self.seq, self.method))


def parse_cseq(text: str) -> CSeq:
    """Parse a CSeq value; the number must be below 2**31 (RFC 3261 §8.1.1.5)."""
    m = _CSEQ_RE.fullmatch(text)
    if m is None:
        raise HeaderParseError(f"bad CSeq {text!r}")
    seq = int(m.group(1))
    if seq > MAX_CSEQ:
        raise HeaderParseError(f"CSeq number out of range: {m.group(1)}")
    return CSeq(seq, m.group(2))
