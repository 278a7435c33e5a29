"""Parse SIP messages from bytes: datagrams (RFC 3261 §18.3) and streams.

Pure wire-format code: no Twisted imports.

A fast path (:func:`_fast_parse`) takes the usual message, written as
``serialize()`` would write it, and only ever accepts: on anything else it
hands over to the careful path (:func:`_parse_careful`), which finds and
names every fault. Both split the header block once, keep each value's text,
and check eagerly only what a UAS must check before anything else (RFC 3261
§8.2, §18): the start line, the mandatory header fields (Via, From, To,
Call-ID, CSeq), CSeq, Max-Forwards, Content-Length and the Contact list.
Those parsed values are cached on the message, so the accessors cost nothing
afterwards. Semantic checks (unknown method → 501, unsupported URI scheme →
416, Require → 420, Content-Type → 415, REGISTER with a non-SIP To → 400) are
the UAS core's business: the parser accepts those messages and exposes what
the core needs (``uri.scheme``, ``uri.is_sip``, the headers).

Errors raise :class:`MessageParseError`; its ``status`` is the response a
request deserves (400, 505, 513) or ``None`` for a response (or anything that
is not a request), which must be dropped silently (RFC 3261 §18.1.2, §18.3).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

from clicktodial.sip.headers import MAX_CSEQ, CSeq
from clicktodial.sip.message import (
    _CANONICAL,
    _CANONICAL_KEY_OF,
    _KEY_OF,
    Headers,
    Request,
    Response,
    _name_info,
    reason_phrase,
)
from clicktodial.sip.uri import HeaderParseError, URIParseError, parse_uri, unescape
from clicktodial.sip.wirecache import BoundedCache

__all__ = [
    "MessageParseError",
    "FramingError",
    "parse_message",
    "validate_message",
    "StreamParser",
    "MAX_MESSAGE",
    "MAX_LINE",
    "MAX_HEADERS",
    "KNOWN_METHODS",
]

#: Largest message accepted, body included (bigger: 513 Message Too Large).
MAX_MESSAGE = 65536
#: Longest header line accepted, after unfolding (longer: 400).
MAX_LINE = 8192
#: Most header fields accepted (more: 400).
MAX_HEADERS = 256

#: Methods whose CSeq method we hold to the request method (RFC 3261 §8.1.1.5).
#: For other methods, the UAS core answers 501 first (RFC 4475 §3.1.2.18).
KNOWN_METHODS = frozenset(
    [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    ]
)

_MANDATORY = ("via", "from", "to", "call-id", "cseq")
_MANDATORY_NAMES = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}
# Header fields that may appear only once (RFC 3261 §7.3.1: not list-valued).
_SINGLE = frozenset(["from", "to", "call-id", "cseq", "content-length", "max-forwards"])
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_FOLD_RE = re.compile(r"\r\n(?=[ \t])")
_CL_RE = re.compile(
    rb"\r\n(?:content-length|l)[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.IGNORECASE
)


class MessageParseError(ValueError):
    """A message could not be parsed.

    ``status`` is the status code to answer a request with (400, 505, 513...)
    or ``None`` when the message must be dropped silently (responses, and
    bytes that are not recognisably a request). ``reason`` is the reason phrase
    for that response, saying what was wrong (``Bad Request (Invalid CSeq)``).
    ``partial_headers`` holds the Via/From/To/Call-ID/CSeq fields that could be
    read, so a stateless error response can be built (RFC 3261 §8.2.6).
    ``method`` is the request method when the request line named one (an ACK
    is never answered, RFC 3261 §17.2.1), else ``None``.
    """

    def __init__(
        self,
        detail: str,
        status: int | None = 400,
        *,
        is_request: bool = True,
        partial_headers: Headers | None = None,
        method: str | None = None,
    ) -> None:
        self.detail = detail
        self.method = method
        self.is_request = is_request
        self.status: int | None = status if is_request else None
        phrase = reason_phrase(self.status) if self.status is not None else "Dropped"
        self.reason = f"{phrase} ({detail})"
        self.partial_headers = partial_headers
        super().__init__(self.reason)


class FramingError(MessageParseError):
    """The message boundaries on a stream are lost: the connection must be closed."""


def parse_message(
    data: bytes, *, stream: bool = False, validate: bool = True
) -> Request | Response:
    """Parse one message: a whole datagram, or one framed message if *stream*.

    Datagram framing (RFC 3261 §18.3): bytes after Content-Length are
    ignored; without Content-Length the body is the rest of the datagram; a
    body shorter than Content-Length is an error. With *stream*, a missing
    Content-Length is an error (it is mandatory on streams).

    With ``validate=False`` only the framing is done and checked: size
    limits, the start line (split, SIP version, method token, status code),
    the header lines (split at the colon, names, bare CR/LF, count, length)
    and the body by Content-Length. The contents of the header fields and the
    Request-URI are then left unchecked: :func:`validate_message` does those
    checks (``parse_message(data)`` is exactly both, and reports the fault a
    message would get from both, in the same order).
    """
    # The common case: a well-formed message written as serialize() would
    # write it. Anything else (or any doubt) takes the careful path below.
    # The header block ends at the last empty line: most bodies have none,
    # and searching from the end is quicker (the header block is usually the
    # longer part). If the body has one, the header block taken here contains
    # an empty line, which the fast path declines.
    # (CRLFs before the start line make an empty start line, which the fast
    # path declines.)
    end = data.rfind(b"\r\n\r\n")
    if 0 < end <= MAX_LINE and len(data) <= MAX_MESSAGE:
        try:
            head = data[:end].decode("ascii")
        except UnicodeDecodeError:
            head = data[:end].decode("utf-8", "surrogateescape")
        msg = _fast_parse(data, head, end + 4, validate)
        if msg is not None:
            return msg
    return _parse_careful(data, stream, validate)


def _parse_careful(data: bytes, stream: bool, validate: bool) -> Request | Response:
    """:func:`parse_message` for any input: every fault found and named."""
    n = len(data)
    is_request = not data.startswith(b"SIP/")
    if n > MAX_MESSAGE:
        end = data.find(b"\r\n\r\n", 0, MAX_MESSAGE)
        head = data[: end if end >= 0 else MAX_MESSAGE]
        raise MessageParseError(
            "Message Too Large",
            513,
            is_request=is_request,
            partial_headers=_salvage(_decode(head).split("\r\n")),
        )
    start = 0
    # RFC 3261 §7.5: CRLFs before the start line are ignored.
    while data.startswith(b"\r\n", start):
        start += 2
    if start:
        is_request = not data.startswith(b"SIP/", start)
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        # Tolerate a datagram whose header block is not followed by the empty
        # line (two archived torture messages end that way); a stream cannot.
        if not stream and data.endswith(b"\r\n") and n - start > 2:
            end = n - 2
            body_start = n
        else:
            raise MessageParseError(
                "Unterminated header block",
                400,
                is_request=is_request,
                partial_headers=_salvage(_decode(data[start:]).split("\r\n")),
            )
    else:
        body_start = end + 4
    exact = start == 0 and body_start == end + 4
    try:
        # (_decode inlined: this runs for every datagram.)
        text = data[start:end].decode("ascii")
    except UnicodeDecodeError:
        text = data[start:end].decode("utf-8", "surrogateescape")
    return _parse(data, text, body_start, stream, validate, exact)


def validate_message(message: Request | Response) -> None:
    """Check what a UAS must check before anything else (RFC 3261 §8.2, §18.3).

    The Request-URI syntax; Via, From, To, Call-ID and CSeq present; From,
    To, Call-ID, CSeq, Content-Length and Max-Forwards not repeated; the
    syntax of Via, From, To, Contact, Call-ID, CSeq (whose method must match
    a known request method) and Max-Forwards. Raises :class:`MessageParseError`
    as :func:`parse_message` does (it calls this unless told ``validate=False``).
    """
    h = message.headers
    keys, values = h.keyed_values()
    if isinstance(message, Request):
        method, uri_text = message.method, message.uri_text
    else:
        method = uri_text = ""
    try:
        _validate(message.is_request, method, uri_text, keys, values)
    except _Fault as fault:
        raise _error(fault, message.is_request, method, [f"{n}:{v}" for n, v in h]) from None


def _decode(head: bytes) -> str:
    # Nearly every header block is ASCII, which decodes several times faster.
    try:
        return head.decode("ascii")
    except UnicodeDecodeError:
        return head.decode("utf-8", "surrogateescape")


# --- syntax checks: compiled once, run on the raw values (no objects built) --
# The structured values are built from the same text on first access by
# clicktodial.sip.headers / clicktodial.sip.uri; these regexes only decide
# whether a message is well formed enough to hand to the UAS core.
_LWS = r"[ \t]*"
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
# Written as "unrolled loops" of single character classes: CPython's re runs
# those in a tight C loop, alternations per character are several times slower.
_QSTR = r'"[^"\\\r\n]*(?:\\[^\r\n][^"\\\r\n]*)*"'
# hostname / IPv4address as uri.py reads them: no leading "." or "-", no trailing "-".
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)"
_PORT = r"[0-9]{1,5}"
# %-escapes are allowed by the classes; their form is checked separately.
_SIP_USER = r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%\x80-\U0010ffff]+"
_SIP_USER_NOSEMI = r"[A-Za-z0-9\-_.!~*'()&=+$/%\x80-\U0010ffff]+"
_SIP_PASSWORD = r"[A-Za-z0-9\-_.!~*'()&=+$,%]*"
_URI_PARAM = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]+"
_HNV = r"[A-Za-z0-9\-_.!~*'()\[\]/?:+$%]*"
_SIP_SCHEME = r"[sS][iI][pP][sS]?:"
_SIP_URI = (
    _SIP_SCHEME
    + r"(?:"
    + _SIP_USER
    + r"(?::"
    + _SIP_PASSWORD
    + r")?@)?"
    + _HOST
    + r"(?::"
    + _PORT
    + r")?(?:;"
    + _URI_PARAM
    + r"(?:="
    + _URI_PARAM
    + r")?)*"
    + r"(?:\?"
    + _HNV
    + r"="
    + _HNV
    + r"(?:&"
    + _HNV
    + r"="
    + _HNV
    + r")*)?"
)
_OTHER_URI = r"(?!" + _SIP_SCHEME + r")[A-Za-z][A-Za-z0-9+\-.]*:[^\x00-\x20\"<>\x7f]+"
_ADDR_SPEC = (
    r"(?:"
    + _SIP_SCHEME
    + r"(?:"
    + _SIP_USER_NOSEMI
    + r"(?::"
    + _SIP_PASSWORD
    + r")?@)?"
    + _HOST
    + r"(?::"
    + _PORT
    + r")?"
    + r"|(?!"
    + _SIP_SCHEME
    + r")[A-Za-z][A-Za-z0-9+\-.]*:[^\x00-\x20\"<>\x7f;,?]+)"
)
# Parameter lists are possessive (*+): a parameter starts with ";" and its
# name and value cannot contain one, so no match ever needs to give a
# parameter back, and CPython's re runs a possessive repeat about twice as fast.
_GEN_PARAM = (
    _LWS
    + r";"
    + _LWS
    + _TOKEN
    + r"(?:"
    + _LWS
    + r"="
    + _LWS
    + r"(?:[A-Za-z0-9\-.!%*_+`'~:\[\]]+|"
    + _QSTR
    + r"))?"
)
_NAME_ADDR = (
    _LWS
    + r"(?:(?:"
    + _QSTR
    + r"|"
    + _TOKEN
    + r"(?:[ \t]+"
    + _TOKEN
    + r")*)?"
    + _LWS
    + r"<(?:"
    + _SIP_URI
    + r"|"
    + _OTHER_URI
    + r")>|"
    + _ADDR_SPEC
    + r")(?:"
    + _GEN_PARAM
    + r")*+"
    + _LWS
)
_VIA_PARM = (
    _LWS
    + r"[sS][iI][pP]"
    + _LWS
    + r"/"
    + _LWS
    + r"2\.0"
    + _LWS
    + r"/"
    + _LWS
    + _TOKEN
    + r"[ \t]+"
    + _HOST
    + r"(?:"
    + _LWS
    + r":"
    + _LWS
    + _PORT
    + r")?(?:"
    + _GEN_PARAM
    + r")*+"
    + _LWS
)
_SIP_URI_RE = re.compile(_SIP_URI)
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_OTHER_URI_RE = re.compile(_OTHER_URI)
_NAME_ADDR_RE = re.compile(_NAME_ADDR)
_CONTACT_RE = re.compile(_LWS + r"\*" + _LWS + r"|" + _NAME_ADDR + r"(?:," + _NAME_ADDR + r")*")
_STAR_RE = re.compile(_LWS + r"\*" + _LWS)
_NAME_ADDR_LIST_RE = re.compile(_NAME_ADDR + r"(?:," + _NAME_ADDR + r")*")
_VIA_RE = re.compile(_VIA_PARM + r"(?:," + _VIA_PARM + r")*")
_CSEQ_RE = re.compile(_LWS + r"([0-9]{1,10})[ \t]+(" + _TOKEN + r")" + _LWS)
_DIGITS_RE = re.compile(_LWS + r"([0-9]{1,10})" + _LWS)
_MANDATORY_SET = frozenset(_MANDATORY)
_PARAMS_RE = re.compile(r"(?:" + _GEN_PARAM + r")*+" + _LWS)

# Texts found well formed, per grammar. Most of what the checks read repeats
# from message to message: a UA's Contact and sent-by, a user's From/To
# without the tag, the Request-URIs. Each distinct text is matched once; a
# value carrying a parameter that changes every time (Via branch, tags) is
# checked as the part before it, looked up here, and the parameters after it,
# matched alone. Bounded (clicktodial.sip.wirecache): texts from the network
# must not grow them without limit.
_Known = BoundedCache[str, bool]
_VIAS_KNOWN: _Known = BoundedCache("sip.well-formed-vias")
_NAME_ADDRS_KNOWN: _Known = BoundedCache("sip.well-formed-name-addrs")
_CONTACTS_KNOWN: _Known = BoundedCache("sip.well-formed-contacts")
_URIS_KNOWN: _Known = BoundedCache("sip.well-formed-request-uris")
_KNOWN_URI = _URIS_KNOWN.entries


def _well_formed(text: str, regex: re.Pattern[str], memory: _Known, split: str) -> bool:
    """Whether *regex* matches all of *text*; *memory* holds texts it matched.

    When *text* has *split* (``;branch=``, ``;tag=``) followed by a value of
    unreserved characters (letters, digits, ``-._~``), what is remembered is
    its *shape*: the text with that value left out. Every grammar checked this
    way accepts such a value wherever it can stand after ``=`` (a parameter
    value, a quoted string, a URI part), at any length, so all texts of one
    shape get the same verdict and one match serves them all. With another
    value, the part before *split* is looked up or matched, and the rest must
    be header parameters: a text made of a match of *regex* (whose grammar
    ends with any number of parameters and whitespace) and more parameters is
    a match too. Anything else is decided by *regex* on the whole text.
    """
    known = memory.entries
    head, sep, rest = text.partition(split)
    if sep:
        value, semi, tail = rest.partition(";")
        if value and not value.strip(_UNRESERVED):
            # (A value has no LF: "\n" cannot occur in a text's own shape.)
            shape = head + "\n" + semi + tail
            if shape in known:
                return True
            if regex.fullmatch(text) is None:
                return False
            memory.remember(shape, True)
            return True
        if head not in known:
            if regex.fullmatch(head) is None:
                return regex.fullmatch(text) is not None
            memory.remember(head, True)
        # A list grammar (Via, Contact) ends with its last element, which the
        # parameters extend.
        return (
            _PARAMS_RE.fullmatch(text, len(head)) is not None or regex.fullmatch(text) is not None
        )
    if text in known:
        return True
    if regex.fullmatch(text) is None:
        return False
    memory.remember(text, True)
    return True


_UNRESERVED = string.ascii_letters + string.digits + "-._~"


def _parse(
    data: bytes, head: str, body_start: int, stream: bool, validate: bool, exact: bool
) -> Request | Response:
    """Frame (and unless told otherwise validate) one message whose header block is *head*.

    *exact* says the message starts at the start line and its header block
    ends with an empty line: then, if every other part is written as
    :meth:`Message.serialize` would write it, *data* is kept as the
    message's serialized form.
    """
    lines = head.split("\r\n")
    first = lines[0]
    is_request = not first.startswith("SIP/")
    # (method, Request-URI as written) or ("", reason phrase); the status code.
    method = uri_text = ""
    status = 0
    try:
        if is_request:
            method, uri_text = _request_line(first)
        else:
            status, uri_text = _status_line(first)
        del lines[0]
        try:
            crlf = len(lines)
            if crlf > MAX_HEADERS:
                raise _Fault("Too many header fields")
            if len(head) > MAX_LINE and len(max(lines, key=len)) > MAX_LINE:
                raise _Fault("Header line too long")
            # Fast path: every line is "Name:value" with a name seen before.
            # Anything else (folding, unknown or odd names, no colon, bare CR/LF)
            # takes the careful path.
            # (A plain loop with unpacking is faster than zip(*...) here.)
            names: list[str] = []
            values: list[str] = []
            add_name = names.append
            add_value = values.append
            try:
                for line in lines:
                    name, value = line.split(":", 1)
                    add_name(name)
                    add_value(value)
                try:
                    # Names spelled as serialize() writes them (the usual case).
                    keys = list(map(_CANONICAL_KEY_OF.__getitem__, names))
                except KeyError:
                    keys = list(map(_KEY_OF.__getitem__, names))
                    exact = False
            except (KeyError, ValueError):
                keys, names, values = _careful_fields(lines)
                exact = False
            n = head.count("\n")
            if n != crlf or n != head.count("\r"):
                raise _Fault("Bare CR or LF in header block")
        except _Fault:
            if validate and is_request:
                # The Request-URI comes first in the order faults are reported.
                _check_request_uri(uri_text)
            raise
        body = b""
        if "content-length" in keys:
            cl_text = values[keys.index("content-length")]
            text = cl_text.strip(" \t")
            if not (text.isdigit() and text.isascii() and len(text) <= 10):
                fault = _Fault("Invalid Content-Length")
            else:
                cl = int(text)
                avail = len(data) - body_start
                if cl > avail:
                    fault = _Fault("Content-Length larger than message")
                elif cl == avail:
                    body = data[body_start:]
                    fault = None
                else:
                    # RFC 3261 §18.3: octets after Content-Length are ignored.
                    body = data[body_start : body_start + cl]
                    fault = None
                    exact = False
        elif stream:
            fault = _Fault("Missing Content-Length")
        else:
            body = data[body_start:]
            fault = None
            exact = False  # serialize() adds a Content-Length
        parsed: dict[str, object] | None = None
        if validate:
            # Content-Length faults come after the header checks in the order faults are reported.
            parsed = {"cseq": _validate(is_request, method, uri_text, keys, values)}
        if fault is not None:
            raise fault
    except _Fault as fault:
        raise _error(fault, is_request, first.partition(" ")[0], lines) from None
    wire = None
    if (
        exact
        and (
            first.endswith(" SIP/2.0")
            if is_request
            # SIP/2.0 SP code SP reason, the reason without %-escapes to undo.
            else first.startswith("SIP/2.0 ") and len(first) > 11 and "%" not in first
        )
        and cl_text == f" {cl}"
        and keys.count("content-length") == 1
    ):
        # serialize() would write these very octets: keep them (RFC 3261
        # §18: a stateless proxy or a retransmission sends them unchanged).
        wire = data
    if is_request:
        return Request.from_wire(method, uri_text, keys, names, values, body, wire, parsed)
    return Response.from_wire(status, uri_text, keys, names, values, body, wire, parsed)


# The lookup key of a header name spelled as serialize() writes it (KeyError
# for any other spelling); the dict grows as names are seen (bounded).
_canonical_key = _CANONICAL_KEY_OF.__getitem__
# Status codes as written on a status line, and their value (100-699).
_STATUS_CODES = {str(code): code for code in range(100, 700)}


def _fast_parse(
    data: bytes, head: str, body_start: int, validate: bool
) -> Request | Response | None:
    """The careful path's result for the common well-formed message, else ``None``.

    *data* starts with the start line and its header block, *head*, ends with
    the empty line at *body_start*. The common case is the message exactly as
    :meth:`Message.serialize` would write it: a known method or a status line
    without ``%``, every header name in its canonical spelling and every line
    ``Name:value``, no folding or bare CR/LF, one Content-Length equal to the
    octets after the empty line (or that number padded with spaces, as SIPp
    writes it: then the octets are not kept as the serialized message), and
    (with *validate*) header values the checks' memory or regular expressions
    find well formed. For such a message this returns what :func:`_parse`
    returns (tests hold the two to that); for anything else, including every
    message :func:`_parse` would reject, it returns ``None`` and the caller
    takes the careful path, which builds the precise error.
    """
    lines = head.split("\r\n")
    if len(lines) > MAX_HEADERS + 1 or len(head) > MAX_LINE:
        return None
    rest = "".join(lines)
    if "\r" in rest or "\n" in rest:
        return None  # bare CR or LF
    first = lines[0]
    start = _START_LINES.get(first)
    if start is None:
        start = _start_line(first)
        if start is None:
            return None
        _START_LINES_SEEN.remember(first, start)
    is_request, method, uri_text, status = start
    del lines[0]
    names: list[str] = []
    values: list[str] = []
    add_name = names.append
    add_value = values.append
    try:
        for line in lines:
            name, value = line.split(":", 1)
            add_name(name)
            add_value(value)
    except ValueError:
        return None  # a line without a colon
    # (Joined: one fresh string hashes faster than a tuple of them. A name
    # has no ":", so the joined text stands for the one list of names.)
    names_key = ":".join(names)
    layout = _NAME_LAYOUTS.get(names_key)
    if layout is None:
        layout = _name_layout(names)
        if layout is None:
            return None
        _NAME_LAYOUTS_SEEN.remember(names_key, layout)
    keys, i_cl, checks = layout
    if i_cl < 0:
        return None
    cl_text = values[i_cl]
    size = len(data) - body_start
    wire: bytes | None = data
    if cl_text != " 0" if size == 0 else cl_text != f" {size}":
        # Padded ("Content-Length:   115": SIPp writes [len] so): the same framing, but
        # serialize() writes the number without the padding, so the octets are not kept.
        if cl_text.strip(" \t") != str(size):
            return None
        wire = None
    parsed: dict[str, object] = {}
    if validate:
        if is_request and uri_text not in _KNOWN_URI:
            try:
                _check_request_uri(uri_text)
            except _Fault:
                return None
        if checks is None:
            return None
        cseq = _fast_validate(checks, values, method if is_request else None)
        if cseq is None:
            return None
        parsed["cseq"] = cseq
    # serialize() would write these very octets (unless padded): keep them (RFC 3261
    # §18: a stateless proxy or a retransmission sends them unchanged).
    if is_request:
        return _request_from_wire(
            method, uri_text, list(keys), names, values, data[body_start:], wire, parsed
        )
    return _response_from_wire(
        status, uri_text, list(keys), names, values, data[body_start:], wire, parsed
    )


# (Bound once: the fast path builds every message it takes with one of these.)
_request_from_wire = Request.from_wire
_response_from_wire = Response.from_wire


# Header names as written, in order and joined by ":" -> (their lookup keys, the position of
# the one Content-Length or -1 if there is none or more than one, the
# positions of the checked fields or None, see _layout). Only for names all
# spelled as serialize() writes them, whose keys never change: a UA sends the
# same names in the same order again and again (bounded).
_NameLayout = tuple[tuple[str, ...], int, "_Layout | None"]
_NAME_LAYOUTS_SEEN: BoundedCache[str, _NameLayout] = BoundedCache("sip.header-layouts")
_NAME_LAYOUTS = _NAME_LAYOUTS_SEEN.entries


def _name_layout(names: list[str]) -> _NameLayout | None:
    """The layout of header *names*; ``None`` if one is not spelled as serialize() writes it."""
    try:
        keys = tuple(map(_canonical_key, names))
    except KeyError:
        return None
    i_cl = keys.index("content-length") if keys.count("content-length") == 1 else -1
    return keys, i_cl, _layout(keys)


# Start lines the fast path took, as _start_line reads them (bounded): the
# same few status lines and Request-URIs come again and again.
_START_LINES_SEEN: BoundedCache[str, tuple[bool, str, str, int]] = BoundedCache("sip.start-lines")
_START_LINES = _START_LINES_SEEN.entries


def _start_line(line: str) -> tuple[bool, str, str, int] | None:
    """(is request, method, Request-URI or reason, status) of a start line as
    serialize() writes it (known method; status line without ``%``), else ``None``."""
    if line.startswith("SIP/2.0 "):
        status = _STATUS_CODES.get(line[8:11])
        if status is None or line[11:12] != " " or len(line) == 12 or "%" in line:
            return None
        return False, "", line[12:], status
    parts = line.split(" ")
    if len(parts) != 3:
        return None
    method, uri_text, version = parts
    if version != "SIP/2.0" or method not in KNOWN_METHODS or not uri_text:
        return None
    return True, method, uri_text, 0


def _fast_validate(layout: _Layout, values: list[str], method: str | None) -> CSeq | None:
    """The CSeq when :func:`_validate` certainly finds nothing wrong, else ``None``.

    *layout* says where the checked fields are among *values*. A Via,
    From, To or Contact value is first looked up in the checks' memory by
    its shape, as :func:`_well_formed` remembers it (the text with the
    ``;branch=``/``;tag=``/``;expires=`` value of letters and digits, or of
    unreserved characters, left out), and only checked in full when it is
    not there; anything unusual is left to :func:`_validate` (``None``).
    """
    shaped, i_call_id, i_cseq, i_hops = layout
    # CSeq: " 314159 INVITE", a known method (the request's).
    try:
        blank, number, cseq_method = values[i_cseq].split(" ")
    except ValueError:
        return None
    if blank:
        return None
    if not (number.isdigit() and number.isascii() and len(number) <= 10):
        return None
    seq = int(number)
    if (
        seq > MAX_CSEQ
        or cseq_method not in KNOWN_METHODS
        or (method is not None and cseq_method != method)
    ):
        return None
    for i, known, split, well_formed in shaped:
        text = values[i]
        head, sep, rest = text.partition(split)
        if sep:
            value, semi, tail = rest.partition(";")
            if (
                (value.isalnum() or (value != "" and not value.strip(_UNRESERVED)))
                and value.isascii()
                and head + "\n" + semi + tail in known
            ):
                continue
        elif text in known:
            continue
        if not well_formed(text):
            return None
    if len(values[i_call_id].split()) != 1:
        return None
    if i_hops >= 0:
        hops = values[i_hops]
        if hops not in _USUAL_HOPS:
            hops = hops.strip(" \t")
            if not (hops.isdigit() and hops.isascii() and len(hops) <= 10):
                return None
    return CSeq(seq, cseq_method)


def _via_well_formed(text: str) -> bool:
    return _well_formed(text, _VIA_RE, _VIAS_KNOWN, ";branch=")


def _name_addr_well_formed(text: str) -> bool:
    return _well_formed(text, _NAME_ADDR_RE, _NAME_ADDRS_KNOWN, ";tag=")


# Where the checked fields are in a header layout (the lookup keys in order):
# (the Via, From, To and Contact fields, each as (position, memory, the
# parameter whose value is left out of its shape, full check); Call-ID; CSeq;
# Max-Forwards or -1), or None for a layout the fast checks leave to the
# careful path; remembered with the header names (_NAME_LAYOUTS).
_Shaped = tuple[int, dict[str, bool], str, Callable[[str], bool]]
_Layout = tuple[tuple[_Shaped, ...], int, int, int]


def _layout(keys: tuple[str, ...]) -> _Layout | None:
    """The positions of *keys*' checked fields; ``None`` if a mandatory field is
    missing or a field that may appear once is repeated."""
    if len(set(keys)) != len(keys) and any(keys.count(key) > 1 for key in _SINGLE):
        return None
    try:
        i_from, i_to, i_call_id, i_cseq = (
            keys.index(key) for key in ("from", "to", "call-id", "cseq")
        )
    except ValueError:
        return None
    vias = [
        (i, _VIAS_KNOWN.entries, ";branch=", _via_well_formed)
        for i, key in enumerate(keys)
        if key == "via"
    ]
    if not vias:
        return None
    name_addrs = [
        (i, _NAME_ADDRS_KNOWN.entries, ";tag=", _name_addr_well_formed) for i in (i_from, i_to)
    ]
    contacts = [
        (i, _CONTACTS_KNOWN.entries, ";expires=", _contact_well_formed)
        for i, key in enumerate(keys)
        if key == "contact"
    ]
    hops = keys.index("max-forwards") if "max-forwards" in keys else -1
    return tuple(vias + name_addrs + contacts), i_call_id, i_cseq, hops


# Max-Forwards values as usually written (" 70").
_USUAL_HOPS = frozenset(f" {hops}" for hops in range(256))


def _error(fault: _Fault, is_request: bool, method: str, lines: list[str]) -> MessageParseError:
    """The error for *fault*; *method* is the request's (as written), ignored for a response."""
    if not is_request:
        method = ""
    return MessageParseError(
        fault.detail,
        fault.status,
        is_request=is_request,
        partial_headers=_salvage(lines),
        method=method if _TOKEN_RE.fullmatch(method) else None,
    )


def _cseq_parts(text: str) -> tuple[int, str] | None:
    """The number and method of a CSeq value, ``None`` if ``_CSEQ_RE`` does not match it."""
    parts = text.split(" ")
    if len(parts) == 3 and not parts[0]:
        # The usual " 314159 INVITE", without the regex.
        number, method = parts[1], parts[2]
        if method in KNOWN_METHODS and number.isdigit() and number.isascii() and len(number) <= 10:
            return int(number), method
    m = _CSEQ_RE.fullmatch(text)
    return None if m is None else (int(m.group(1)), m.group(2))


def _contact_well_formed(text: str) -> bool:
    """Whether *text* matches ``_CONTACT_RE``: ``*``, or a list of name-addrs."""
    # Split at ";expires=": a refresh may change it; the rest stays the same.
    return (
        _well_formed(text, _NAME_ADDR_LIST_RE, _CONTACTS_KNOWN, ";expires=")
        or _STAR_RE.fullmatch(text) is not None
    )


def _validate(
    is_request: bool, method: str, uri_text: str, keys: list[str], values: list[str]
) -> CSeq:
    """The §8.2/§18 checks of :func:`validate_message` of a message whose start line
    gave *method* and *uri_text* (a request's), whose fields are *keys* and *values*;
    returns the CSeq, raises :class:`_Fault`."""
    if is_request:
        _check_request_uri(uri_text)
    keyset = set(keys)
    if len(keyset) != len(keys):
        for key in _SINGLE:
            if keys.count(key) > 1:
                raise _Fault(f"Multiple {_CANONICAL[key]} header fields")
    if not keyset >= _MANDATORY_SET:
        for key in _MANDATORY:
            if key not in keyset:
                raise _Fault(f"Missing {_MANDATORY_NAMES[key]} header")
    parts = _cseq_parts(values[keys.index("cseq")])
    if parts is None or parts[0] > MAX_CSEQ:
        raise _Fault("Invalid CSeq")
    cseq = CSeq(*parts)
    if is_request and cseq.method != method and method in KNOWN_METHODS:
        raise _Fault("CSeq method does not match request method")
    if keys.count("via") == 1:
        if not _via_well_formed(values[keys.index("via")]):
            raise _Fault("Invalid Via header")
    elif not all(_via_well_formed(v) for k, v in zip(keys, values, strict=True) if k == "via"):
        raise _Fault("Invalid Via header")
    if not _name_addr_well_formed(values[keys.index("from")]):
        raise _Fault("Invalid From header")
    if not _name_addr_well_formed(values[keys.index("to")]):
        raise _Fault("Invalid To header")
    if len(values[keys.index("call-id")].split()) != 1:
        raise _Fault("Invalid Call-ID")
    if "contact" in keyset:
        if keys.count("contact") == 1:
            if not _contact_well_formed(values[keys.index("contact")]):
                raise _Fault("Invalid Contact header")
        elif not all(
            _contact_well_formed(v) for k, v in zip(keys, values, strict=True) if k == "contact"
        ):
            raise _Fault("Invalid Contact header")
    if "max-forwards" in keyset and not _DIGITS_RE.fullmatch(values[keys.index("max-forwards")]):
        raise _Fault("Invalid Max-Forwards")
    return cseq


def _careful_fields(lines: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Split header lines the slow way: folding, new names, malformed lines."""
    if any(line[:1] in (" ", "\t") for line in lines):
        if lines[0][:1] in (" ", "\t"):
            raise _Fault("Malformed header line")
        # RFC 3261 §7.3.1: a line starting with whitespace continues the one before.
        joined: list[str] = []
        for line in lines:
            if line[:1] in (" ", "\t"):
                joined[-1] += line
            else:
                joined.append(line)
        lines[:] = joined
    keys = []
    names = []
    values = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise _Fault("Malformed header line")
        try:
            key, _ = _name_info(name.rstrip(" \t"))
        except HeaderParseError:
            raise _Fault("Malformed header name") from None
        keys.append(key)
        names.append(name.rstrip(" \t"))
        values.append(value)
    return keys, names, values


class _Fault(Exception):
    def __init__(self, detail: str, status: int = 400) -> None:
        self.detail = detail
        self.status = status


def _request_line(line: str) -> tuple[str, str]:
    """The method and Request-URI (as written) of a Request-Line."""
    parts = line.split(" ")
    if len(parts) != 3:
        if len(parts) > 3 and line.endswith(" "):
            raise _Fault("Trailing whitespace in Request-Line")
        if len(parts) > 3:
            raise _Fault("Extra whitespace in Request-Line")
        raise _Fault("Malformed Request-Line")
    method, uri_text, version = parts
    if not method or not uri_text:
        raise _Fault("Extra whitespace in Request-Line")
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        if _VERSION_RE.fullmatch(version):
            raise _Fault(f"Unsupported SIP version {version}", 505)
        raise _Fault("Malformed Request-Line")
    if method not in KNOWN_METHODS and not _TOKEN_RE.fullmatch(method):
        raise _Fault("Invalid method")
    return method, uri_text


def _check_request_uri(uri_text: str) -> None:
    if uri_text in _KNOWN_URI:
        return
    if uri_text[:4].lower() in _SIP_PREFIXES:
        if not _SIP_URI_RE.fullmatch(uri_text) or (
            "%" in uri_text and _BAD_ESCAPE_RE.search(uri_text)
        ):
            raise _Fault("Invalid Request-URI")
        # The URI reader has the last word (the grammar above is the fast
        # screen): a Request-URI the stack cannot read is a 400 here, never
        # an exception later when the request's .uri is used.
        try:
            parsed = parse_uri(uri_text)
        except ValueError:
            raise _Fault("Invalid Request-URI") from None
        # RFC 3261 §19.1.5: no headers in a Request-URI (RFC 4475 §3.1.2.11).
        if parsed.headers:
            raise _Fault("Escaped headers in Request-URI")
    elif not _OTHER_URI_RE.fullmatch(uri_text):
        raise _Fault("Invalid Request-URI")
    _URIS_KNOWN.remember(uri_text, True)


_SIP_PREFIXES = frozenset(["sip:", "sips"])


def _status_line(line: str) -> tuple[int, str]:
    """The status code and reason phrase (%-escapes undone) of a Status-Line."""
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        raise _Fault("Unsupported SIP version")
    if len(code) != 3 or not code.isdigit() or not code.isascii() or code[0] not in "123456":
        raise _Fault("Invalid status code")
    if "%" in reason:
        # RFC 3261 §25.1: Reason-Phrase may carry escapes; unescape once, keep
        # the text as is when they are not well formed.
        try:
            reason = unescape(reason)
        except URIParseError:
            pass
    return int(code), reason


def _salvage(lines: list[str]) -> Headers:
    """The Via/From/To/Call-ID/CSeq fields of a bad message, read leniently."""
    headers = Headers()
    for line in lines[: MAX_HEADERS + 1]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        try:
            key, _ = _name_info(name.strip(" \t"))
        except HeaderParseError:
            continue
        if key in _MANDATORY_NAMES and "\r" not in value and "\n" not in value:
            headers.add(name.strip(" \t"), value.strip(" \t")[:MAX_LINE])
    return headers


class StreamParser:
    """Frame and parse messages from a byte stream (TCP/TLS), by Content-Length.

    :meth:`feed` returns the messages completed so far. A malformed message
    whose framing is intact raises :class:`MessageParseError` once every
    message before it has been returned: answer it, then call ``feed(b"")``
    to go on with the bytes after it. :class:`FramingError` means the
    boundaries are lost (missing or bad Content-Length, message too large):
    close the connection.
    """

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        # How far the buffer has been searched for the end of the header
        # block, and the (header end, total length) of a message waiting for
        # its body: a peer sending one octet at a time costs linear time.
        self._scanned = 0
        self._frame: tuple[int, int] | None = None

    def feed(self, data: bytes) -> list[Request | Response]:
        """Add *data*; return every message now complete."""
        buf = self._buf
        buf += data
        out: list[Request | Response] = []
        while buf:
            frame = self._frame
            if frame is None:
                # RFC 3261 §7.5 / RFC 5626 §4.4.1: CRLFs between messages
                # (keep-alives) are ignored.
                skip = 0
                while buf.startswith(b"\r\n", skip):
                    skip += 2
                if skip:
                    del buf[:skip]
                    self._scanned = 0
                    continue
                if buf == b"\r":
                    break
                end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
                is_request = not buf.startswith(b"SIP/")
                if end < 0:
                    self._scanned = len(buf)
                    if len(buf) > self.max_message:
                        raise FramingError(
                            "Message Too Large",
                            513,
                            is_request=is_request,
                            partial_headers=_salvage(
                                _decode(bytes(buf[: self.max_message])).split("\r\n")
                            ),
                        )
                    break
                try:
                    cl = _stream_content_length(bytes(buf[:end]), is_request)
                except FramingError as e:
                    e.partial_headers = _salvage(_decode(bytes(buf[:end])).split("\r\n"))
                    raise
                frame = self._frame = (end, end + 4 + cl)
                if frame[1] > self.max_message:
                    raise FramingError(
                        "Message Too Large",
                        513,
                        is_request=is_request,
                        partial_headers=_salvage(_decode(bytes(buf[:end])).split("\r\n")),
                    )
            end, total = frame
            if len(buf) < total:
                break
            raw = bytes(buf[:total])
            try:
                head = _decode(raw[:end])
                msg = _fast_parse(raw, head, end + 4, True) or _parse(
                    raw, head, end + 4, True, True, True
                )
            except MessageParseError:
                if out:
                    # Hand over what came before; the error is raised on the next call.
                    return out
                self._consume(total)
                raise
            self._consume(total)
            out.append(msg)
        return out

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._scanned = 0
        self._frame = None

    @property
    def buffered(self) -> int:
        """How many bytes wait for the rest of their message."""
        return len(self._buf)


def _stream_content_length(head: bytes, is_request: bool) -> int:
    values = _CL_RE.findall(b"\r\n" + head)
    if not values:
        raise FramingError("Missing Content-Length", 400, is_request=is_request)
    lengths = set()
    for v in values:
        v = re.sub(rb"\s+", b"", v)
        if not v.isdigit() or len(v) > 10:
            raise FramingError("Invalid Content-Length", 400, is_request=is_request)
        lengths.add(int(v))
    if len(lengths) != 1:
        raise FramingError("Conflicting Content-Length", 400, is_request=is_request)
    return lengths.pop()
