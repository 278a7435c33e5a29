"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966), and an opaque form for other schemes.

Pure wire-format code: no Twisted imports.

``%``-escapes in the user, password, parameters and headers of a SIP URI are
unescaped exactly once when parsing (``value%25%41`` becomes ``value%41``,
never ``valueA``: RFC 4475 §3.1.1.3) and re-escaped where the grammar requires
it when serializing. A URI is an immutable value: use :meth:`URI.replace`,
:meth:`URI.with_params` or :meth:`URI.without_params` to derive a new one.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from operator import attrgetter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes

from clicktodial.sip.wirecache import BoundedCache

__all__ = ["URI", "URIParseError", "HeaderParseError", "parse_uri", "unescape", "escape"]


class HeaderParseError(ValueError):
    """A header field value does not follow its RFC 3261 grammar."""


class URIParseError(HeaderParseError):
    """The text is not a URI we can read (RFC 3261 §25.1 grammar)."""


# RFC 3261 §25.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
#: The parameters of every URI without any (never changed: a URI is immutable).
_NO_PARAMS: dict[str, str | None] = {}
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# hostname / IPv4address (IPv6 references are handled separately).
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Characters each URI part may carry unescaped (RFC 3261 §25.1), beyond the
# ALPHA / DIGIT / "_.-~" that urllib's quote() always leaves alone.
_MARK = "!*'()"
_SAFE_USER = _MARK + "&=+$,;?/"
_SAFE_PASSWORD = _MARK + "&=+$,"
_SAFE_PARAM = _MARK + "[]/:&+$"
_SAFE_HEADER = _MARK + "[]/?:+$"
# Characters allowed in each part, escapes included: used to reject junk
# (spaces, quotes, angle brackets...) while parsing.
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()%"
_USER_RE = re.compile(r"[" + _UNRESERVED + r"&=+$,;?/\x80-\U0010ffff]+")
_PASSWORD_RE = re.compile(r"[" + _UNRESERVED + r"&=+$,]*")
_PARAM_RE = re.compile(r"[" + _UNRESERVED + r"\[\]/:&+$]+")
_HEADER_RE = re.compile(r"[" + _UNRESERVED + r"\[\]/?:+$]*")
# Anything printable without spaces, quotes or angle brackets: the opaque part
# of a URI of an unknown scheme (RFC 3261 absoluteURI, read liberally).
_OPAQUE_RE = re.compile(r"[^\x00-\x20\"<>\x7f]*")


def unescape(text: str) -> str:
    """Replace each ``%HH`` by its octet, once (RFC 3986 §2.1), never recursively.

    Octets are decoded as UTF-8 with ``surrogateescape`` so any byte survives.
    Raises :class:`URIParseError` for a ``%`` not followed by two hex digits.
    """
    if "%" not in text:
        return text
    if _BAD_ESCAPE_RE.search(text):
        raise URIParseError(f"bad %-escape in {text!r}")
    return unquote_to_bytes(text.encode("utf-8", "surrogateescape")).decode(
        "utf-8", "surrogateescape"
    )


def escape(text: str, safe: str) -> str:
    """%-escape every character of *text* not allowed unescaped (beyond *safe*)."""
    return quote(text.encode("utf-8", "surrogateescape"), safe=safe)


_FAST_USER_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/]*")
_FAST_PARAM_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]*")


def _esc_param(text: str) -> str:
    if _FAST_PARAM_RE.fullmatch(text):
        return text
    return escape(text, _SAFE_PARAM)


def _format_host(host: str) -> str:
    # RFC 3261 §19.1.1 / RFC 5118: IPv6 references are written in brackets.
    return f"[{host}]" if ":" in host else host


class URI:
    """A parsed URI.

    For ``sip``/``sips`` every field is filled in; ``host`` holds an IPv6
    address *without* brackets (``2001:db8::1``), brackets are added when
    writing. For ``tel`` the number is in ``user`` and its parameters in
    ``params``. Other schemes keep their text after ``scheme:`` in ``opaque``.

    Parameter names are stored lower-cased (they are case-insensitive, RFC
    3261 §19.1.4); values are stored unescaped, ``None`` for a parameter
    without a value (``;lr``). ``headers`` is an ordered list of
    ``(name, value)`` pairs, unescaped.
    """

    # Private slots behind read-only properties: a URI cannot be changed in
    # place (its text is kept), and building one stays cheap.
    __slots__ = (
        "_scheme",
        "_user",
        "_password",
        "_host",
        "_port",
        "_params",
        "_headers",
        "_opaque",
        "_text",
        "_is_sip",
    )

    _scheme: str
    _user: str | None
    _password: str | None
    _host: str
    _port: int | None
    _params: dict[str, str | None]
    _headers: tuple[tuple[str, str], ...]
    _opaque: str | None
    _text: str
    _is_sip: bool

    def __init__(
        self,
        scheme: str,
        user: str | None = None,
        host: str = "",
        port: int | None = None,
        params: Mapping[str, str | None] | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        password: str | None = None,
        opaque: str | None = None,
    ) -> None:
        scheme = scheme.lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        if opaque is None and scheme not in ("sip", "sips", "tel"):
            raise ValueError(f"a {scheme!r} URI needs opaque=")
        if password is not None and user is None:
            raise ValueError("a password needs a user")
        # Shared where they can be: a URI is never changed in place, and one is kept
        # per dialog for a whole call (docs/benchmarks.md, memory per held call).
        self._scheme = sys.intern(scheme)
        self._user = user
        self._password = password
        self._host = host
        self._port = port
        self._params = (
            # (built-ins only: a comprehension would cost a Python-level call)
            dict(zip(map(str.lower, params), params.values(), strict=True))
            if params
            else _NO_PARAMS
        )
        if headers is None:
            self._headers = ()
        elif isinstance(headers, Mapping):
            self._headers = tuple(headers.items())
        else:
            self._headers = tuple(headers)
        self._opaque = opaque
        self._is_sip = scheme == "sip" or scheme == "sips"
        # Written once, when made: a URI is immutable, and one is written at least
        # once (into a header or a start line) nearly always.
        self._text = self._serialize()

    # The plain fields are read-only properties whose getter is operator.attrgetter (C):
    # reading one costs no Python call (a registrar reads several for every REGISTER, a
    # call writes its URIs into every request).
    if TYPE_CHECKING:

        @property
        def scheme(self) -> str:
            """The scheme, lower-cased (``sip``, ``sips``, ``tel``...)."""

        @property
        def user(self) -> str | None:
            """The user part, unescaped (the number for ``tel``)."""

        @property
        def password(self) -> str | None:
            """The password, unescaped (discouraged by RFC 3261 §19.1.1, but legal)."""

        @property
        def host(self) -> str:
            """The host: a name, an IPv4 address, or an IPv6 address without brackets."""

        @property
        def port(self) -> int | None:
            """The port, ``None`` if absent."""

        @property
        def opaque(self) -> str | None:
            """Everything after ``scheme:`` for schemes other than sip/sips (and tel)."""

        @property
        def is_sip(self) -> bool:
            """True for ``sip:`` and ``sips:`` URIs (what RFC 3261 requires of an AOR)."""

        @property
        def text(self) -> str:
            """The URI as written: as received for a parsed URI (``str(uri)``)."""

    else:
        scheme = property(
            attrgetter("_scheme"), doc="The scheme, lower-cased (``sip``, ``sips``, ``tel``...)."
        )
        user = property(
            attrgetter("_user"), doc="The user part, unescaped (the number for ``tel``)."
        )
        password = property(
            attrgetter("_password"),
            doc="The password, unescaped (discouraged by RFC 3261 §19.1.1, but legal).",
        )
        host = property(
            attrgetter("_host"),
            doc="The host: a name, an IPv4 address, or an IPv6 address without brackets.",
        )
        port = property(attrgetter("_port"), doc="The port, ``None`` if absent.")
        opaque = property(
            attrgetter("_opaque"),
            doc="Everything after ``scheme:`` for schemes other than sip/sips (and tel).",
        )
        is_sip = property(
            attrgetter("_is_sip"),
            doc="True for ``sip:`` and ``sips:`` URIs (what RFC 3261 requires of an AOR).",
        )
        text = property(
            attrgetter("_text"),
            doc="The URI as written: as received for a parsed URI (``str(uri)``).",
        )

    @property
    def params(self) -> Mapping[str, str | None]:
        """URI parameters (read-only): lower-cased names, unescaped values, ``None`` for a flag."""
        return MappingProxyType(self._params)

    @property
    def headers(self) -> list[tuple[str, str]]:
        """``?headers`` as ``(name, value)`` pairs, unescaped (a copy)."""
        return list(self._headers)

    @property
    def host_port(self) -> str:
        """``host[:port]`` as written in a URI (IPv6 in brackets)."""
        h = _format_host(self.host)
        return h if self.port is None else f"{h}:{self.port}"

    def param(self, name: str) -> str | None:
        """The value of URI parameter *name* (``None`` if absent or valueless)."""
        return self._params.get(name.lower())

    def has_param(self, name: str) -> bool:
        """Whether URI parameter *name* is present (with or without a value)."""
        return name.lower() in self._params

    def replace(self, **changes: Any) -> URI:
        """A copy of this URI with the given fields changed."""
        fields: dict[str, Any] = {
            "scheme": self.scheme,
            "user": self.user,
            "host": self.host,
            "port": self.port,
            "params": self._params,
            "headers": self._headers,
            "password": self.password,
            "opaque": self.opaque,
        }
        fields.update(changes)
        return URI(**fields)

    def with_params(
        self, params: Mapping[str, str | None] | None = None, /, **kw: str | None
    ) -> URI:
        """A copy with parameters added or replaced (value ``None`` = flag parameter)."""
        new = dict(self._params)
        if params:
            new.update({k.lower(): v for k, v in params.items()})
        new.update({k.lower(): v for k, v in kw.items()})
        return self.replace(params=new)

    def without_params(self, *names: str) -> URI:
        """This URI without the named parameters (itself when it has none of them)."""
        drop = {n.lower() for n in names}
        if drop.isdisjoint(self._params):
            return self  # (an immutable value: no copy needed)
        return self.replace(params={k: v for k, v in self._params.items() if k not in drop})

    def without_headers(self) -> URI:
        """This URI without ``?headers`` (RFC 3261 §19.1.5: not allowed in a Request-URI);
        itself when it has none."""
        if not self._headers:
            return self  # (the usual case; an immutable value: no copy needed)
        return self.replace(headers=[])

    def _serialize(self) -> str:
        # (Slots read directly, the host written inline: every URI made is written once.)
        scheme = self._scheme
        if scheme == "tel":
            parts = ["tel:", self._user or ""]
        elif self._opaque is not None and not self._is_sip:
            return f"{scheme}:{self._opaque}"
        else:
            parts = [scheme, ":"]
            user = self._user
            if user is not None:
                parts.append(user if _FAST_USER_RE.fullmatch(user) else escape(user, _SAFE_USER))
                if self._password is not None:
                    parts.append(":" + escape(self._password, _SAFE_PASSWORD))
                parts.append("@")
            host = self._host
            if ":" in host:
                host = f"[{host}]"  # RFC 3261 §19.1.1 / RFC 5118: IPv6 in brackets
            port = self._port
            parts.append(host if port is None else f"{host}:{port}")
        for k, v in self._params.items():
            parts.append(";" + _esc_param(k) if v is None else f";{_esc_param(k)}={_esc_param(v)}")
        if self._headers:
            parts.append(
                "?"
                + "&".join(
                    f"{escape(k, _SAFE_HEADER)}={escape(v, _SAFE_HEADER)}" for k, v in self._headers
                )
            )
        return "".join(parts)

    def __str__(self) -> str:
        return self._text

    serialize = __str__

    def __repr__(self) -> str:
        return f"URI({self._text!r})"

    def _key(self) -> tuple[Any, ...]:
        return (
            self.scheme,
            self.user,
            self.password,
            self.host.lower(),
            self.port,
            tuple(sorted(self._params.items(), key=lambda kv: kv[0])),
            tuple(self._headers),
            self.opaque if self.scheme not in ("sip", "sips", "tel") else None,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, URI):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def _split_params(text: str, what: str, checked: bool = False) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not checked and (
            not name or not _PARAM_RE.fullmatch(name) or (eq and not _PARAM_RE.fullmatch(value))
        ):
            raise URIParseError(f"bad {what} parameter {item!r}")
        if "%" in item:
            params[unescape(name).lower()] = unescape(value) if eq else None
        else:
            params[name.lower()] = value if eq else None
    return params


# Parsed URIs by text. A URI is immutable, so one object can serve every
# message naming it (AORs, contacts and Request-URIs repeat a lot). Bounded:
# clicktodial.sip.wirecache.
_URIS: BoundedCache[str, URI] = BoundedCache("sip.uris")
_CACHE = _URIS.entries


def parse_uri(text: str) -> URI:
    """Parse a URI: SIP/SIPS fully, tel into number and parameters, others opaquely.

    Raises :class:`URIParseError` (a ``ValueError``) when malformed.
    """
    uri = _CACHE.get(text)
    if uri is not None:
        return uri
    return _URIS.remember(text, _parse_uri(text))


def _parse_uri(text: str) -> URI:
    colon = text.find(":")
    if colon <= 0 or not _SCHEME_RE.fullmatch(text, 0, colon):
        raise URIParseError(f"no scheme in URI {text!r}")
    scheme = text[:colon].lower()
    rest = text[colon + 1 :]
    if scheme == "sip" or scheme == "sips":
        uri = _parse_sip(scheme, rest, text)
    elif scheme == "tel":
        number, _, ptext = rest.partition(";")
        if not number or not _PARAM_RE.fullmatch(number):
            raise URIParseError(f"bad tel URI {text!r}")
        params = _split_params(ptext, "tel") if ptext else None
        uri = URI("tel", number, "", None, params, opaque=rest)
    else:
        if not rest or not _OPAQUE_RE.fullmatch(rest):
            raise URIParseError(f"bad URI {text!r}")
        uri = URI(scheme, None, "", None, None, None, None, rest)
    uri._text = text if text[:colon] == scheme else scheme + text[colon:]
    return uri


# One pass over a SIP/SIPS URI after "sip:" (RFC 3261 §25.1), %-escapes
# allowed in the classes and checked when undone. Written with single
# character classes so that CPython's re runs them in tight loops.
_SIP_REST_RE = re.compile(
    r"(?:([A-Za-z0-9\-_.!~*'()&=+$,;?/%\x80-\U0010ffff]+)(?::([A-Za-z0-9\-_.!~*'()&=+$,%]*))?@)?"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)"
    r"(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]+)?)*)"
    r"(?:\?([A-Za-z0-9\-_.!~*'()\[\]/?:+$%=&]*))?"
)


def _parse_sip(scheme: str, rest: str, text: str) -> URI:
    m = _SIP_REST_RE.fullmatch(rest)
    if m is None:
        raise URIParseError(f"bad SIP URI {text!r}")
    user, password, host, port_text, ptext, htext = m.groups()
    if user is not None and "%" in user:
        user = unescape(user)
    if password is not None and "%" in password:
        password = unescape(password)
    if host[0] == "[":
        host = host[1:-1]
        if ":" not in host:
            raise URIParseError(f"bad IPv6 reference in URI {text!r}")
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            raise URIParseError(f"port out of range in URI {text!r}")
    uri = URI.__new__(URI)
    uri._scheme = sys.intern(scheme)
    uri._user = user
    uri._password = password
    uri._host = host
    uri._port = port
    uri._params = _split_params(ptext[1:], "URI", checked=True) if ptext else _NO_PARAMS
    headers: list[tuple[str, str]] = []
    if htext is not None:
        for item in htext.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq or "=" in value:
                raise URIParseError(f"bad header {item!r} in URI {text!r}")
            headers.append((unescape(name), unescape(value)))
    uri._headers = tuple(headers)
    uri._opaque = None
    uri._is_sip = True
    return uri
