"""SIP messages (RFC 3261 §7): header multi-map, requests, responses, and helpers.

Pure wire-format code: no Twisted imports.

Header values are kept as the text that arrived (decoded UTF-8 with
``surrogateescape``, so every byte survives a round trip; folded lines joined
by dropping the CRLF, RFC 3261 §7.3.1). Structured values (Via, From, CSeq...)
are parsed from that text on first access through the typed accessors and
cached on the :class:`Headers` object, by lookup key; a mutation of the fields
of one name drops what was parsed from them (every parsed value is read from
the fields of its own name only). The parsed objects handed out are snapshots:
to change a header, write its text back (``msg.headers.set("To", str(new_to))``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

from clicktodial.sip.headers import (
    CSeq,
    HeaderParseError,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_name_addr_list,
    parse_via,
    split_commas,
)
from clicktodial.sip.uri import _URIS, URI, parse_uri
from clicktodial.sip.wirecache import BoundedCache

__all__ = [
    "Headers",
    "Message",
    "Request",
    "Response",
    "HeaderParseError",
    "make_response",
    "new_branch",
    "new_tag",
    "new_call_id",
    "reason_phrase",
    "canonical_name",
    "BRANCH_MAGIC",
]

#: RFC 3261 §8.1.1.7: branches of RFC 3261 elements start with this cookie.
BRANCH_MAGIC = "z9hG4bK"

# RFC 3261 §7.3.3 and the IANA registry: compact form -> full name.
_COMPACT = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

_CANONICAL_NAMES = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "Min-SE",
    "MIME-Version",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
]
_CANONICAL = {n.lower(): n for n in _CANONICAL_NAMES}

# Header fields whose value is a comma-separated list (RFC 3261 §7.3.1): get_all()
# splits these. Others (Date, WWW-Authenticate, unknown headers...) are never split.
_LIST_HEADERS = frozenset(
    [
        "accept",
        "accept-contact",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-preferred-identity",
        "path",
        "proxy-require",
        "reason",
        "record-route",
        "reject-contact",
        "require",
        "route",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    ]
)

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def _read_name(name: str) -> tuple[str, str]:
    """(lookup key, name to write) of header *name*; raises :class:`HeaderParseError`."""
    if not _TOKEN_RE.fullmatch(name):
        raise HeaderParseError(f"bad header name {name!r}")
    key = name.lower()
    key = _COMPACT.get(key, key)
    return key, _CANONICAL.get(key, name)


# The names every message uses, read once: they stay in the caches below
# whatever the network sends (their seed).
_USUAL_NAMES = {
    n: _read_name(n)
    for n in [
        *_CANONICAL_NAMES,
        *(n.lower() for n in _CANONICAL_NAMES),
        *_COMPACT,
        *(c.upper() for c in _COMPACT),
    ]
}
# Header names as written, filled from the network (clicktodial.sip.wirecache).
# name as written -> (lookup key, name to write):
_NAMES: BoundedCache[str, tuple[str, str]] = BoundedCache("sip.header-names", seed=_USUAL_NAMES)
# name as written -> lookup key, for the parser's fast path:
_KEYS: BoundedCache[str, str] = BoundedCache(
    "sip.header-keys", seed={n: info[0] for n, info in _USUAL_NAMES.items()}
)
# The same for the names that serialize() writes unchanged: when every name is
# found here, the parser may hand out the received octets as the serialized
# message.
_CANONICAL_KEYS: BoundedCache[str, str] = BoundedCache(
    "sip.canonical-header-keys",
    seed={n: info[0] for n, info in _USUAL_NAMES.items() if info[1] == n},
)
_NAME_CACHE = _NAMES.entries
_KEY_OF = _KEYS.entries
_CANONICAL_KEY_OF = _CANONICAL_KEYS.entries


def _name_info(name: str) -> tuple[str, str]:
    info = _NAME_CACHE.get(name)
    if info is not None:
        return info
    info = _NAMES.remember(name, _read_name(name))
    _KEYS.remember(name, info[0])
    if info[1] == name:
        _CANONICAL_KEYS.remember(name, info[0])
    return info


def canonical_name(name: str) -> str:
    """The spelling we write for header *name* (compact forms expanded)."""
    return _name_info(name)[1]


_T = TypeVar("_T")
_MISSING: Any = object()
# A header field line: the name and the value as kept (whitespace after the colon).
_FIELD_FORMAT = "{}:{}".format
_URIS_BY_TEXT = _URIS.entries


class Headers:
    """An ordered multi-map of header fields.

    Names match case-insensitively, compact forms included (``i`` is
    ``Call-ID``); known names are written in their canonical spelling,
    unknown ones as received. Values are ``str``; :meth:`get` and friends
    return them without surrounding whitespace.

    Internally three parallel lists: lookup keys (lower-cased full names),
    names as received, and values as received (with the whitespace after the
    colon), so that a parsed message serializes its fields unchanged.
    ``_pristine`` is the octets of the message the parser read the fields
    from, or :meth:`Message.serialize` last wrote them into, as long as they
    are untouched (``None`` once anything changes, until the next
    serialization): :meth:`Message.serialize` hands those octets back only
    to the message they came from.
    """

    __slots__ = ("_keys", "_names", "_values", "_cache", "_pristine")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._keys: list[str] = []
        self._names: list[str] = []
        self._values: list[str] = []
        self._cache: dict[str, Any] = {}
        # The parsed (or last serialized) octets while the fields are exactly as
        # they were then (see Message.serialize); every mutation sets it None.
        self._pristine: bytes | None = None
        # (add()'s work written out: requests are built of fields lists, a call less each.)
        keys, names, values = self._keys, self._names, self._values
        for name, value in fields:
            key, cname = _NAME_CACHE.get(name) or _name_info(name)
            if "\r" in value or "\n" in value:
                _refuse_value(value)
            keys.append(key)
            names.append(cname)
            values.append(" " + value)

    def keyed_values(self) -> tuple[list[str], list[str]]:
        """The fields' lookup keys (lower-case full names) and values as received
        (whitespace after the colon kept), as two new parallel lists."""
        return list(self._keys), list(self._values)

    def get(self, name: str) -> str | None:
        """The value of the first field called *name*, or ``None``."""
        try:
            i = self._keys.index((_NAME_CACHE.get(name) or _name_info(name))[0])
        except ValueError:
            return None
        return self._values[i].strip(" \t")

    def _first(self, key: str) -> str | None:
        try:
            return self._values[self._keys.index(key)].strip(" \t")
        except ValueError:
            return None

    def get_fields(self, name: str) -> list[str]:
        """The value of every field called *name*, never split on commas."""
        return self._all((_NAME_CACHE.get(name) or _name_info(name))[0])

    def _all(self, key: str) -> list[str]:
        keys = self._keys
        count = keys.count(key)
        if count == 1:  # the usual case: one field, found without a loop in Python
            return [self._values[keys.index(key)].strip(" \t")]
        if count == 0:
            return []
        return [v.strip(" \t") for k, v in zip(keys, self._values, strict=True) if k == key]

    def get_all(self, name: str) -> list[str]:
        """Every value of *name*, in order; list-valued headers split on commas.

        Only headers whose grammar is a comma-separated list (Via, Contact,
        Route, Allow, Supported...) are split, never inside quotes or ``<>``.
        """
        key = (_NAME_CACHE.get(name) or _name_info(name))[0]
        keys = self._keys
        # (_all's usual cases written out: option tags are asked for on every request,
        # and are usually absent.)
        count = keys.count(key)
        if count == 0:
            return []
        if count == 1:
            value = self._values[keys.index(key)].strip(" \t")
            return split_commas(value) if key in _LIST_HEADERS else [value]
        values = self._all(key)
        if key in _LIST_HEADERS:
            return [item for v in values for item in split_commas(v)]
        return values

    def _insert(self, name: str, value: str, i: int = -1) -> None:
        """Insert a field at *i*; by default before the first field of that name (or
        at the top)."""
        key, cname = _NAME_CACHE.get(name) or _name_info(name)
        if "\r" in value or "\n" in value:
            _refuse_value(value)
        if i < 0:
            keys = self._keys
            i = keys.index(key) if key in keys else 0
        self._keys.insert(i, key)
        self._names.insert(i, cname)
        self._values.insert(i, " " + value)
        self._cache.pop(key, None)
        self._pristine = None

    def add(self, name: str, value: str) -> None:
        """Append a field."""
        # (_insert's work written out: responses are built of add()s, a call less each.)
        key, cname = _NAME_CACHE.get(name) or _name_info(name)
        if "\r" in value or "\n" in value:
            _refuse_value(value)
        self._keys.append(key)
        self._names.append(cname)
        self._values.append(" " + value)
        self._cache.pop(key, None)
        self._pristine = None

    def prepend(self, name: str, value: str) -> None:
        """Insert a field before the first field of that name (or at the top)."""
        self._insert(name, value)

    def set(self, name: str, value: str) -> None:
        """Replace every field of *name* by one, at the position of the first (or at the end)."""
        key = _name_info(name)[0]
        keys = self._keys
        at = keys.index(key) if key in keys else len(keys)
        self._delete(key)
        self._insert(name, value, at)

    def _delete(self, key: str) -> None:
        keep = [i for i, k in enumerate(self._keys) if k != key]
        if len(keep) != len(self._keys):
            self._keys = [self._keys[i] for i in keep]
            self._names = [self._names[i] for i in keep]
            self._values = [self._values[i] for i in keep]
        self._cache.pop(key, None)
        self._pristine = None

    def remove(self, name: str) -> None:
        """Remove every field of *name*."""
        self._delete(_name_info(name)[0])

    def remove_first(self, name: str) -> None:
        """Remove the first value of *name*.

        For a list-valued header written as ``a, b`` in one field, only ``a``
        goes (what a proxy does to the top Via, RFC 3261 §16.7).
        """
        key = _name_info(name)[0]
        keys = self._keys
        if key not in keys:
            return
        i = keys.index(key)
        if key in _LIST_HEADERS:
            items = split_commas(self._values[i])
            if len(items) > 1:
                self._values[i] = " " + ", ".join(items[1:])
                self._cache.pop(key, None)
                self._pristine = None
                return
        del keys[i], self._names[i], self._values[i]
        self._cache.pop(key, None)
        self._pristine = None

    def push_via(self, via: Via) -> None:
        """Put *via* on top: the fields come out as ``prepend("Via", via.serialize())``
        leaves them, and *via* is kept as the parsed Via when it is the only one (the
        transaction layer adds the Via of every request it sends, RFC 3261 §8.1.1.7, and
        the transport reads it next)."""
        text = via.serialize()
        if "\r" in text or "\n" in text:
            _refuse_value(text)
        self._insert_via(via, text)

    def _insert_via(self, via: Via, text: str) -> None:
        # push_via's work once *text* (via serialized) is known to be a valid value.
        keys = self._keys
        # (prepend's place: before the first Via field, else at the top)
        at = keys.index("via") if "via" in keys else 0
        keys.insert(at, "via")
        self._names.insert(at, "Via")
        self._values.insert(at, " " + text)
        self._pristine = None
        if keys.count("via") == 1:
            self._cache["via"] = [via]
        else:
            self._cache.pop("via", None)

    def replace_top_via(self, via: Via) -> None:
        """Put *via* in place of the first Via value: the fields come out as
        ``remove_first("Via")`` then ``prepend("Via", via.serialize())`` leave
        them, and *via* is kept as the parsed Via when it is the only one (the
        transport stamps the top Via of every request it receives, RFC 3261
        §18.2.1, and the transaction layer reads it next).

        :raises ValueError: there is no Via field.
        """
        keys = self._keys
        i = keys.index("via")
        if "," in self._values[i] and len(split_commas(self._values[i])) > 1:
            self.remove_first("Via")
            self.prepend("Via", via.serialize())
            return
        text = via.serialize()
        if "\r" in text or "\n" in text:
            _refuse_value(text)
        del keys[i], self._names[i], self._values[i]
        self._insert_via(via, text)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return (_NAME_CACHE.get(name) or _name_info(name))[0] in self._keys

    def __iter__(self) -> Iterator[tuple[str, str]]:
        # The canonical spelling of a known name, else the name as received. (Built-ins
        # only: no Python-level call for the iteration.)
        names = map(_CANONICAL.get, self._keys, self._names)
        return iter(list(zip(names, map(str.strip, self._values, repeat(" \t")), strict=True)))

    def __len__(self) -> int:
        return len(self._keys)

    def _comparable(self) -> list[tuple[str, str]]:
        return [
            (k, v.strip(" \t"))
            for k, v in zip(self._keys, self._values, strict=True)
            if k != "content-length"
        ]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._keys == other._keys and [v.strip(" \t") for v in self._values] == [
            v.strip(" \t") for v in other._values
        ]

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> Headers:
        """An independent copy."""
        return _headers_of(list(self._keys), list(self._names), list(self._values))

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def _parsed(self, key: str, parse: Callable[[Headers], _T]) -> _T:
        # (get, not try/except KeyError: a first access is the usual case, and
        # raising costs more than the lookup.)
        cache = self._cache
        value = cache.get(key, _MISSING)
        if value is _MISSING:
            value = cache[key] = parse(self)
        return value


def _refuse_value(value: str) -> None:
    # A CR or LF in a value would let a caller inject header fields.
    raise ValueError(f"CR/LF in header value {value!r}")


# --- typed accessors: parse on first access, cached on the Headers --------


# (Each accessor reads the cache itself and calls one of these on a miss: the
# accessors run several times for every message, and a call less each counts.)


def _vias(h: Headers) -> list[Via]:
    keys = h._keys
    if keys.count("via") == 1:  # the usual case: one field
        return parse_via(h._values[keys.index("via")].strip(" \t"))
    return [via for v in h._all("via") for via in parse_via(v)]


def _contacts(h: Headers) -> list[NameAddr]:
    keys = h._keys
    if keys.count("contact") == 1:  # the usual case: one field, often of one value
        value = h._values[keys.index("contact")].strip(" \t")
        if value == "*":
            return []
        if "," not in value:
            return [parse_name_addr(value)]
        values = [value]
    else:
        values = h._all("contact")
    out = []
    for v in values:
        if v == "*":
            raise HeaderParseError("Contact '*' mixed with other values")
        out.extend(parse_name_addr_list(v))
    return out


def _int_header(h: Headers, key: str) -> int | None:
    keys = h._keys
    if key not in keys:
        return None
    value = h._values[keys.index(key)].strip()
    name = _CANONICAL[key]
    if not value.isdigit() or not value.isascii() or len(value) > 10:
        raise HeaderParseError(f"bad {name} value {value!r}")
    n = int(value)
    if n > 2**32 - 1:
        raise HeaderParseError(f"{name} value out of range: {value!r}")
    return n


def _routes_of(key: str) -> Callable[[Headers], list[NameAddr]]:
    def parse(h: Headers) -> list[NameAddr]:
        if key not in h._keys:
            return []  # (the usual case: no proxy on the path)
        return [na for v in h._all(key) for na in parse_name_addr_list(v)]

    return parse


_record_routes = _routes_of("record-route")
_routes = _routes_of("route")


_new = object.__new__


def _headers_of(keys: list[str], names: list[str], values: list[str]) -> Headers:
    """Headers made of fields already split and checked (not through ``__init__``).

    (``from_wire`` does the same inline: one call less for every parsed message.)
    """
    h = _new(Headers)
    h._keys = keys
    h._names = names
    h._values = values
    h._cache = {}
    h._pristine = None
    return h


class Message:
    """What requests and responses share: headers, body, typed accessors.

    A parsed message remembers the octets it came from when :meth:`serialize`
    would write exactly those octets, a serialized one the octets it was
    written to, and hands them back from :meth:`serialize` until anything
    changes: assigning the method, URI,
    status, reason or body forgets them, and so does any mutation of the
    :class:`Headers` (which then is no longer *pristine*) or putting other
    :class:`Headers` in :attr:`headers` (the octets are handed back only
    with the fields parsed from them).

    :ivar headers: the header fields (:class:`Headers`): a plain attribute,
        read several times for every message.
    """

    __slots__ = ("headers", "_body", "_wire")

    headers: Headers
    _body: bytes
    _wire: bytes | None

    def __init__(
        self, headers: Headers | Iterable[tuple[str, str]] = (), body: bytes = b""
    ) -> None:
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        if not isinstance(body, bytes):
            raise TypeError("body must be bytes")
        self._body = body
        self._wire = None

    is_request = False

    def _set_body(self, body: bytes) -> None:
        self._body = body
        self._wire = None

    # Read through operator.attrgetter (C): no Python-level call for a read, several
    # for every message; a write forgets the received octets.
    if TYPE_CHECKING:

        @property
        def body(self) -> bytes:
            """The body octets (never decoded)."""

        @body.setter
        def body(self, body: bytes) -> None: ...

    else:
        body = property(attrgetter("_body"), _set_body, doc="The body octets (never decoded).")

    # The accessors read the cache inline (not through Headers._parsed): they run
    # several times for every message, and a call less each counts.

    @property
    def vias(self) -> list[Via]:
        """Every Via value, top first."""
        h = self.headers
        vias = h._cache.get("via")
        if vias is None:
            vias = h._cache["via"] = _vias(h)
        return list(vias)

    @property
    def top_via(self) -> Via:
        """The first Via value (raises :class:`HeaderParseError` if there is none)."""
        h = self.headers
        vias = h._cache.get("via")
        if vias is None:
            keys = h._keys
            if keys.count("via") == 1:  # (_vias' usual case, written out)
                vias = parse_via(h._values[keys.index("via")].strip(" \t"))
            else:
                vias = _vias(h)
            h._cache["via"] = vias
        if not vias:
            raise HeaderParseError("missing Via header")
        return vias[0]

    @property
    def from_(self) -> NameAddr:
        """The From header."""
        h = self.headers
        value = h._cache.get("from")
        if value is None:
            keys = h._keys
            if "from" not in keys:
                raise HeaderParseError("missing From header")
            text = h._values[keys.index("from")].strip(" \t")
            value = h._cache["from"] = parse_name_addr(text)
        return value

    @property
    def to(self) -> NameAddr:
        """The To header."""
        h = self.headers
        value = h._cache.get("to")
        if value is None:
            keys = h._keys
            if "to" not in keys:
                raise HeaderParseError("missing To header")
            text = h._values[keys.index("to")].strip(" \t")
            value = h._cache["to"] = parse_name_addr(text)
        return value

    @property
    def call_id(self) -> str:
        """The Call-ID (compared byte-for-byte, RFC 3261 §20.8)."""
        h = self.headers
        try:
            return h._values[h._keys.index("call-id")].strip(" \t")
        except ValueError:
            raise HeaderParseError("missing Call-ID header") from None

    @property
    def cseq(self) -> CSeq:
        """The CSeq header."""
        h = self.headers
        value = h._cache.get("cseq")
        if value is None:
            try:  # (the first field's text, found inline: a request built here is read back)
                text = h._values[h._keys.index("cseq")].strip(" \t")
            except ValueError:
                raise HeaderParseError("missing CSeq header") from None
            value = h._cache["cseq"] = parse_cseq(text)
        return value

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact value (``[]`` if none, or for ``Contact: *``)."""
        h = self.headers
        contacts = h._cache.get("contact")
        if contacts is None:
            keys = h._keys
            if keys.count("contact") == 1:  # (_contacts' usual case, written out)
                value = h._values[keys.index("contact")].strip(" \t")
                if value != "*" and "," not in value:
                    contacts = [parse_name_addr(value)]
            if contacts is None:
                contacts = _contacts(h)
            h._cache["contact"] = contacts
        return list(contacts)

    @property
    def contact_is_star(self) -> bool:
        """Whether the Contact is ``*`` (REGISTER: remove all bindings, RFC 3261 §10.2.2)."""
        h = self.headers
        keys = h._keys
        if keys.count("contact") == 1:  # the usual case, without a loop in Python
            return h._values[keys.index("contact")].strip(" \t") == "*"
        return "*" in h._all("contact")

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards as an int, ``None`` if absent."""
        h = self.headers
        value = h._cache.get("max-forwards", _MISSING)
        if value is _MISSING:
            # (an absent header found inline: no call)
            value = _int_header(h, "max-forwards") if "max-forwards" in h._keys else None
            h._cache["max-forwards"] = value
        return value

    @property
    def expires(self) -> int | None:
        """The Expires header as an int, ``None`` if absent."""
        h = self.headers
        value = h._cache.get("expires", _MISSING)
        if value is _MISSING:
            # (an absent header found inline: no call; usual in a REGISTER)
            value = _int_header(h, "expires") if "expires" in h._keys else None
            h._cache["expires"] = value
        return value

    @property
    def content_length(self) -> int | None:
        """The Content-Length header as an int, ``None`` if absent."""
        h = self.headers
        value = h._cache.get("content-length", _MISSING)
        if value is _MISSING:
            # (an absent header found inline: no call)
            value = _int_header(h, "content-length") if "content-length" in h._keys else None
            h._cache["content-length"] = value
        return value

    @property
    def record_routes(self) -> list[NameAddr]:
        """Every Record-Route value, in order."""
        h = self.headers
        routes = h._cache.get("record-route")
        if routes is None:
            # (none, the usual case without a proxy on the path, found inline: no call)
            routes = _record_routes(h) if "record-route" in h._keys else []
            h._cache["record-route"] = routes
        return list(routes)

    @property
    def routes(self) -> list[NameAddr]:
        """Every Route value, in order."""
        h = self.headers
        routes = h._cache.get("route")
        if routes is None:
            # (none, the usual case, found inline: no call)
            routes = _routes(h) if "route" in h._keys else []
            h._cache["route"] = routes
        return list(routes)

    def _start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """The message on the wire; Content-Length is set from the body."""
        wire = self._wire
        if wire is not None and self.headers._pristine is wire:
            # Parsed and untouched: the received octets are what we would write.
            return wire
        # The fields, names as Headers.__iter__ writes them, Content-Length from the body.
        # (Written out, with map rather than comprehensions: no Python-level call but the
        # start line's.)
        h = self.headers
        keys = h._keys
        lines = [self._start_line()]
        lines += map(_FIELD_FORMAT, map(_CANONICAL.get, keys, h._names), h._values)
        cl = f"Content-Length: {len(self._body)}"
        if "content-length" in keys:
            lines[keys.index("content-length") + 1] = cl
            if keys.count("content-length") > 1:
                lines[1:] = [
                    x
                    for k, x in zip(keys, lines[1:], strict=True)
                    if k != "content-length" or x is cl
                ]
        else:
            lines.append(cl)
        lines.append("\r\n")
        wire = "\r\n".join(lines).encode("utf-8", "surrogateescape") + self._body
        # Remembered as a parsed message's octets are: a message serialized again unchanged
        # (an ACK kept for its 2xx's copies, the INVITE kept for other forks' 2xx, after the
        # transport wrote them) costs a comparison, not a second join and encode.
        self._wire = h._pristine = wire
        return wire

    def __bytes__(self) -> bytes:
        return self.serialize()

    def _same_content(self, other: Message) -> bool:
        # Content-Length is framing derived from the body: not compared.
        return self.headers._comparable() == other.headers._comparable() and self.body == other.body

    __hash__ = None  # type: ignore[assignment]


class Request(Message):
    """A SIP request: method, Request-URI, headers, body (bytes, never decoded)."""

    __slots__ = ("_method", "_uri", "_uri_text")

    is_request = True
    _method: str
    _uri: URI | None
    _uri_text: str | None

    def _set_method(self, method: str) -> None:
        self._method = method
        self._wire = None

    # Read through operator.attrgetter (C): no Python-level call for a read, several for
    # every request; a write forgets the received octets.
    if TYPE_CHECKING:

        @property
        def method(self) -> str:
            """The method (``INVITE``, ``REGISTER``...), case-sensitive (RFC 3261 §7.1)."""

        @method.setter
        def method(self, method: str) -> None: ...

    else:
        method = property(
            attrgetter("_method"),
            _set_method,
            doc="The method (``INVITE``, ``REGISTER``...), case-sensitive (RFC 3261 §7.1).",
        )

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        # (Message.__init__ written out: a UA builds a request for every one it sends.)
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        if not isinstance(body, bytes):
            raise TypeError("body must be bytes")
        self._body = body
        self._wire = None
        self._method = method
        self._uri = parse_uri(uri) if isinstance(uri, str) else uri
        self._uri_text = None

    @classmethod
    def from_wire(
        cls,
        method: str,
        uri_text: str,
        keys: list[str],
        names: list[str],
        values: list[str],
        body: bytes,
        wire: bytes | None = None,
        parsed: dict[str, Any] | None = None,
    ) -> Request:
        """A request as the parser read it (:mod:`clicktodial.sip.parser`).

        *uri_text* is the Request-URI as written, parsed on first access to
        :attr:`uri`. The header fields are the parallel lists *keys* (lookup
        keys), *names* (as written) and *values* (as received), which the
        request takes over; *parsed* holds values already parsed from them
        (the accessors' cache, such as ``"cseq"``). *wire* is given only when
        it is exactly what :meth:`serialize` would write: it is then handed
        back until the request changes.
        """
        msg = _new(cls)
        msg._method = method
        msg._uri = None
        msg._uri_text = uri_text
        msg.headers = h = _new(Headers)  # (as _headers_of does)
        h._keys = keys
        h._names = names
        h._values = values
        h._cache = {} if parsed is None else parsed
        h._pristine = wire
        msg._body = body
        msg._wire = wire
        return msg

    @property
    def uri(self) -> URI:
        """The Request-URI (parsed on first access; the parser has checked its syntax)."""
        uri = self._uri
        if uri is None:
            text = self._uri_text or ""
            # (parse_uri's memory read inline: the same Request-URIs come again and again.)
            uri = self._uri = _URIS_BY_TEXT.get(text) or parse_uri(text)
        return uri

    @uri.setter
    def uri(self, uri: URI) -> None:
        self._uri = uri
        self._uri_text = None
        self._wire = None

    @property
    def uri_text(self) -> str:
        """The Request-URI as text: as received until :attr:`uri` is assigned."""
        uri = self._uri
        return (self._uri_text or "") if uri is None else uri.text

    def _start_line(self) -> str:
        uri = self._uri  # (uri_text read inline)
        return f"{self.method} {self._uri_text if uri is None else uri.text} SIP/2.0"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return self.method == other.method and self.uri == other.uri and self._same_content(other)

    def __repr__(self) -> str:
        uri = self._uri_text if self._uri is None else self._uri
        return f"<Request {self.method} {uri} call_id={self.headers.get('Call-ID')!r}>"


class Response(Message):
    """A SIP response: status, reason phrase, headers, body."""

    __slots__ = ("_status", "_reason")

    _status: int
    _reason: str

    def _set_status(self, status: int) -> None:
        self._status = status
        self._wire = None

    # Read through operator.attrgetter (C): no Python-level call for a read, several for
    # every response; a write forgets the received octets.
    if TYPE_CHECKING:

        @property
        def status(self) -> int:
            """The status code, 100-699."""

        @status.setter
        def status(self, status: int) -> None: ...

    else:
        status = property(attrgetter("_status"), _set_status, doc="The status code, 100-699.")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        if not 100 <= status <= 699:
            raise ValueError(f"status code out of range: {status}")
        Message.__init__(self, headers, body)
        self._status = status
        self._reason = reason_phrase(status) if reason is None else reason

    @classmethod
    def from_wire(
        cls,
        status: int,
        reason: str,
        keys: list[str],
        names: list[str],
        values: list[str],
        body: bytes,
        wire: bytes | None = None,
        parsed: dict[str, Any] | None = None,
    ) -> Response:
        """A response as the parser read it: *reason* with its %-escapes undone,
        the rest as for :meth:`Request.from_wire`."""
        msg = _new(cls)
        msg._status = status
        msg._reason = reason
        msg.headers = h = _new(Headers)  # (as _headers_of does)
        h._keys = keys
        h._names = names
        h._values = values
        h._cache = {} if parsed is None else parsed
        h._pristine = wire
        msg._body = body
        msg._wire = wire
        return msg

    @property
    def reason(self) -> str:
        """The reason phrase (%-escapes undone)."""
        return self._reason

    @reason.setter
    def reason(self, reason: str) -> None:
        self._reason = reason
        self._wire = None

    def _start_line(self) -> str:
        reason = self._reason
        if "\r" in reason or "\n" in reason:
            raise ValueError("CR/LF in reason phrase")
        if "%" in reason:
            # The parser undoes %-escapes in a Reason-Phrase (RFC 3261 §25.1).
            reason = reason.replace("%", "%25")
        return f"SIP/2.0 {self.status} {reason}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (
            self.status == other.status
            and self.reason == other.reason
            and self._same_content(other)
        )

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call_id={self.headers.get('Call-ID')!r}>"


_REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}
_CLASS_REASONS = {
    1: "Trying",
    2: "OK",
    3: "Redirect",
    4: "Client Error",
    5: "Server Error",
    6: "Global Failure",
}


def reason_phrase(status: int) -> str:
    """The usual reason phrase for *status* (RFC 3261 §21 and later RFCs)."""
    return _REASONS.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


def make_response(
    request: Request, status: int, reason: str | None = None, to_tag: str | None = None
) -> Response:
    """Build a response to *request* as RFC 3261 §8.2.6 says.

    Copies every Via (in order), From, To, Call-ID and CSeq, and for a 100 also
    Timestamp (§8.2.6.1). A To tag is added when *to_tag* is given and the To
    has none.

    What the request's accessors have parsed of those fields is what the
    response's would parse from the copies: the response starts with copies of
    those values (the transport reads its top Via to send it), and with the To
    given its tag when the tag is a plain token of unreserved characters.
    """
    if not 100 <= status <= 699:
        raise ValueError(f"status code out of range: {status}")
    h = request.headers
    # Whether the To fields get the tag: the To (the first field) has none.
    tagged: NameAddr | None = None
    suffix = ""
    if to_tag is not None and "to" in h._keys:
        to = h._cache.get("to")  # (read inline when parsed already)
        if to is None:
            try:
                to = request.to
            except HeaderParseError:
                pass  # do not touch a To we cannot read
        if to is not None and to.params.get("tag") is None:
            tagged = to
            suffix = ";tag=" + to_tag
    keys: list[str] = []
    names: list[str] = []
    values: list[str] = []
    copy = _RESPONSE_COPY_100 if status == 100 else _RESPONSE_COPY
    for key, name, value in zip(h._keys, h._names, h._values, strict=True):
        if key in copy:
            if key == "to" and tagged is not None:
                value = value.rstrip(" \t") + suffix
            keys.append(key)
            names.append(name)
            values.append(value)
    if reason is None:
        reason = _REASONS.get(status) or reason_phrase(status)
    # (from_wire: the fields are copies of checked ones, and it costs fewer calls than
    # the constructor.)
    response = Response.from_wire(status, reason, keys, names, values, b"")
    # Copies (parsed values are snapshots, one set per message), written out: a
    # helper would cost the calls that reading the response's Via again costs.
    parsed = h._cache
    cache = response.headers._cache
    vias = parsed.get("via")
    if vias is not None:
        copies = []
        for via in vias:
            v = _new(Via)
            v.transport, v.host, v.port = via.transport, via.host, via.port
            v.params = dict(via.params)
            copies.append(v)
        cache["via"] = copies
    if "cseq" in parsed:
        cache["cseq"] = parsed["cseq"]  # (never changed in place: it hashes)
    for key in ("from", "to"):
        na = parsed.get(key)
        if na is None:
            continue
        if key == "to" and tagged is not None:
            if not (to_tag and to_tag.isascii() and not to_tag.strip(_UNRESERVED)):
                continue  # (left to be parsed from the response's text)
            params = dict(na.params)
            # The response's To reads as the request's, then ";tag=" + to_tag.
            params["tag"] = to_tag
        else:
            params = dict(na.params)
        addr = _new(NameAddr)
        addr.uri, addr.display_name, addr.params = na.uri, na.display_name, params
        cache[key] = addr
    return response


# A value of these characters after ";tag=" reads back as exactly that tag.
_UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"


_RESPONSE_COPY = frozenset(["via", "from", "to", "call-id", "cseq"])
_RESPONSE_COPY_100 = _RESPONSE_COPY | {"timestamp"}


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie plus 64 random bits (§8.1.1.7)."""
    return BRANCH_MAGIC + os.urandom(8).hex()


def new_tag() -> str:
    """A fresh From/To tag: 64 random bits (RFC 3261 §19.3 asks for at least 32)."""
    return os.urandom(8).hex()


def new_call_id(host: str | None = None) -> str:
    """A fresh, globally unique Call-ID: 96 random bits ``@host`` (RFC 3261 §8.1.1.4)."""
    token = os.urandom(12).hex()
    return f"{token}@{host}" if host else token
