"""
SIP Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760): the server
side (challenges, verification) and the client side (answering a provider's
challenge, see :func:`parse_challenge` and :func:`authorization_for`).

Pure protocol logic on the standard library (``hashlib``, ``hmac``); nothing
here touches the network or a store, and time comes from an injected
``IReactorTime``, so a :class:`DigestAuthenticator` can be tested with a
``task.Clock``.

What we support, and why:
  - algorithms ``SHA-256`` and ``MD5`` (RFC 8760 §2.1 requires SIP servers to
    offer SHA-256 and keep MD5 for old phones), each with ``qop="auth"``.
    A challenge is one ``WWW-Authenticate`` field per algorithm, the
    preferred (SHA-256) first (RFC 8760 §2.4, RFC 7616 §3.7).
  - ``-sess`` algorithms, ``auth-int``, ``userhash`` and ``username*`` are not
    supported: a response that uses them is "no usable credentials" and
    gets a fresh challenge, like any scheme we do not know (RFC 4475 §3.3.7).
  - a response without ``qop`` (RFC 2069 style) is refused: without ``nc``
    and ``cnonce`` a stateless nonce could be replayed for its whole life.

The client side is more lenient than the server, because we answer other
people's servers: it also speaks the ``-sess`` algorithms, ``qop="auth-int"``
(with the body) and RFC 2069 challenges without ``qop``, and echoes
``opaque``.

Nonces are stateless (RFC 7616 §5.4 leaves their form to the server)::

    nonce = base64url(timestamp_ms(8) || random(12) || HMAC-SHA256(secret,
                      timestamp_ms || random || realm)[:16])

so any daemon that shares the secret (a scale-out cluster behind one
domain) can check a nonce another one issued, without shared state. A nonce
older than its lifetime is "stale": the client gets ``stale=true`` and
retries without asking its user, but ONLY when its response was otherwise
correct (RFC 7616 §3.3: a wrong password must never look like a stale nonce).

Replay protection: ``nc`` must strictly increase for each nonce (RFC 7616
§3.4). The counts live in a bounded in-memory :class:`NonceCountTracker` on each
node; across nodes replay protection is per node (a response replayed to
another node of the cluster within the nonce lifetime is accepted there
once). Nonce lifetimes are short (300 s by default) to bound that window.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from attrs import frozen
from twisted.internet.interfaces import IReactorTime

__all__ = [
    "ALGORITHMS",
    "DigestAuthenticator",
    "DigestChallenge",
    "DigestCredentials",
    "DigestError",
    "NonceCountTracker",
    "Verdict",
    "authorization_for",
    "compute_ha1",
    "compute_response",
    "format_challenge",
    "new_cnonce",
    "parse_challenge",
    "parse_auth_params",
    "parse_authorization",
    "select_challenge",
    "select_credentials",
]


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: The algorithms we offer, in order of preference (RFC 8760 §2.4: the
#: strongest first), with their hash functions.
ALGORITHMS: dict[str, Callable[[bytes], str]] = {
    "SHA-256": _sha256_hex,
    "MD5": _md5_hex,
}

# Sizes of the nonce parts (bytes).
_TS_LEN = 8
_RANDOM_LEN = 12
_MAC_LEN = 16
_NONCE_LEN = _TS_LEN + _RANDOM_LEN + _MAC_LEN
_NONCE_TEXT_LEN = (_NONCE_LEN + 2) // 3 * 4
# base64url (RFC 4648 §5) from and to standard base64, as base64.urlsafe_b64encode and
# urlsafe_b64decode do it (without their three Python frames a nonce).
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
#: Where the nonce goes in a challenge text made ahead (no realm holds a NUL).
_NONCE_MARK = "\0nonce\0"
# RFC 2104: the HMAC block size of SHA-256, and its inner and outer pads.
_HMAC_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))

# RFC 7616 §3.4: nc is exactly 8 hex digits.
_NC_LEN = 8


class DigestError(ValueError):
    """An ``Authorization`` field value is not a usable Digest response."""


def _canonical_algorithm(name: str | None) -> str | None:
    # RFC 7616 §3.3: algorithm is case-insensitive; absent means MD5.
    if name is None:
        return "MD5"
    upper = name.upper()
    return upper if upper in ALGORITHMS else None


def _hash_of(algorithm: str | None) -> Callable[[bytes], str]:
    """The hash of a digest ``algorithm`` (any case; absent: MD5); ValueError if unsupported."""
    h = ALGORITHMS.get(algorithm) if algorithm is not None else None
    if h is None:
        canonical = _canonical_algorithm(algorithm)
        if canonical is None:
            raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        h = ALGORITHMS[canonical]
    return h


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """
    ``HA1 = H(username ":" realm ":" password)`` in lower-case hex
    (RFC 7616 §3.4.2), the value a user store keeps instead of the password.

    :raises ValueError: for an algorithm other than ``MD5`` or ``SHA-256``.
    """
    return _hash_of(algorithm)(f"{username}:{realm}:{password}".encode())


def compute_response(
    ha1: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str,
    method: str,
    uri: str,
    algorithm: str = "MD5",
) -> str:
    """
    The expected ``response`` for ``qop="auth"`` (RFC 7616 §3.4.1)::

        KD(HA1, nonce ":" nc ":" cnonce ":" qop ":" H(method ":" uri))

    :raises ValueError: for an unsupported algorithm.
    """
    return _response(_hash_of(algorithm), ha1, nonce, nc, cnonce, qop, method, uri, None)


def _response(
    h: Callable[[bytes], str],
    ha1: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str | None,
    method: str,
    uri: str,
    body: bytes | None,
) -> str:
    # RFC 7616 §3.4.3: A2 = method ":" uri [ ":" H(entity-body) for auth-int ]
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + h(body or b"")
    ha2 = h(a2.encode())
    if qop is None:
        # RFC 2069 (RFC 2617 §3.2.2.1 compatibility): no nc, cnonce, qop.
        return h(f"{ha1}:{nonce}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


# -- parsing ------------------------------------------------------------------

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_LWS = " \t\r\n"
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_SEPARATORS_RE = re.compile(r"[ \t\r\n,]*")
# Separators, then name = ( token / quoted-string ), then LWS up to a comma or the end
# (RFC 3261 §25.1 auth-param, quoted-pair = "\\" any character): one match a parameter.
_AUTH_PARAM_RE = re.compile(
    r"[ \t\r\n,]*(" + _TOKEN + r")[ \t\r\n]*=[ \t\r\n]*"
    r'(?:"((?:[^"\\]|\\.)*)"|(' + _TOKEN + r"))[ \t\r\n]*(?=,|\Z)",
    re.DOTALL,
)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_HEX_RE = re.compile(r"[0-9a-fA-F]+")


def parse_auth_params(text: str) -> dict[str, str]:
    """
    Parse a comma-separated list of ``name=token`` or ``name="quoted"`` auth
    params (RFC 3261 §25.1 / RFC 7235 §2.1) into a dict with lower-case
    names. Quoted strings may contain ``\\"`` and ``\\\\`` escapes
    (quoted-pair).

    :raises DigestError: on a syntax error or a repeated parameter
        (RFC 7616 §3.4: "MUST NOT be repeated").
    """
    params: dict[str, str] = {}
    pos, n = 0, len(text)
    separators, param = _SEPARATORS_RE.match, _AUTH_PARAM_RE.match
    while True:
        m = param(text, pos)
        if m is None:
            pos = separators(text, pos).end()  # type: ignore[union-attr]
            if pos >= n:
                return params
            raise DigestError(f"malformed auth-param at {text[pos : pos + 20]!r}")
        name, quoted, token = m.groups()
        name = name.lower()
        if quoted is None:
            value = token
        elif "\\" in quoted:
            value = _QUOTED_PAIR_RE.sub(r"\1", quoted)
        else:
            value = quoted
        if name in params:
            raise DigestError(f"parameter {name!r} is repeated")
        params[name] = value
        pos = m.end()


@frozen
class DigestCredentials:
    """
    A parsed ``Authorization``/``Proxy-Authorization`` Digest response.

    :ivar algorithm: canonical name (``"MD5"`` or ``"SHA-256"``).
    :ivar qop: always ``"auth"`` (anything else is refused at parse time).
    :ivar nc: the nonce count as sent: 8 hex digits.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    cnonce: str
    nc: str
    qop: str = "auth"
    opaque: str | None = None

    @property
    def nc_value(self) -> int:
        """The nonce count as an integer."""
        return int(self.nc, 16)


_REQUIRED = ("username", "realm", "nonce", "uri", "response", "cnonce", "nc", "qop")


def parse_authorization(value: str) -> DigestCredentials:
    """
    Parse one ``Authorization`` or ``Proxy-Authorization`` field value.

    Unknown parameters are ignored (RFC 7616 §3.4: "Any unrecognized
    directive MUST be ignored").

    :raises DigestError: for another scheme, a syntax error, a missing
        parameter, or a feature we do not support (see the module
        docstring); the caller answers with a fresh challenge.
    """
    stripped = value.lstrip(_LWS)
    end = 0
    while end < len(stripped) and stripped[end] in _TOKEN_CHARS:
        end += 1
    scheme = stripped[:end]
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported authentication scheme {scheme!r}")
    if end < len(stripped) and stripped[end] not in _LWS:
        raise DigestError("malformed Digest credentials")
    params = parse_auth_params(stripped[end:])
    if "username*" in params or params.get("userhash", "false").lower() != "false":
        raise DigestError("username* and userhash are not supported")
    missing = [name for name in _REQUIRED if name not in params]
    if missing:
        raise DigestError("missing Digest parameter(s): " + ", ".join(missing))
    algorithm = _canonical_algorithm(params.get("algorithm"))
    if algorithm is None:
        raise DigestError(f"unsupported algorithm {params['algorithm']!r}")
    qop = params["qop"].lower()
    if qop != "auth":
        raise DigestError(f"unsupported qop {params['qop']!r}")
    nc = params["nc"]
    if len(nc) != _NC_LEN or _HEX_RE.fullmatch(nc) is None:
        raise DigestError(f"malformed nonce count {nc!r}")
    response = params["response"].lower()
    expected_len = 64 if algorithm == "SHA-256" else 32
    if len(response) != expected_len or _HEX_RE.fullmatch(response) is None:
        raise DigestError("malformed response digest")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=response,
        algorithm=algorithm,
        cnonce=params["cnonce"],
        nc=nc.lower(),
        qop=qop,
        opaque=params.get("opaque"),
    )


def select_credentials(values: Iterable[str], realm: str) -> DigestCredentials | None:
    """
    The first usable Digest response for ``realm`` among several
    ``Authorization`` field values (RFC 3261 §22.4: a UA may send one per
    realm), or :class:`None` if there is none.
    """
    for value in values:
        try:
            credentials = parse_authorization(value)
        except DigestError:
            continue
        if credentials.realm == realm:
            return credentials
    return None


# -- challenges ---------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_challenge(
    realm: str, nonce: str, algorithm: str, stale: bool = False, opaque: str | None = None
) -> str:
    """
    One ``WWW-Authenticate`` (or ``Proxy-Authenticate``) field value
    (RFC 7616 §3.3) offering ``qop="auth"``.
    """
    parts = [f"Digest realm={_quote(realm)}", f"nonce={_quote(nonce)}"]
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    parts.append(f"algorithm={algorithm}")
    parts.append('qop="auth"')
    if stale:
        parts.append("stale=true")
    return ", ".join(parts)


# -- client side --------------------------------------------------------------


@frozen
class DigestChallenge:
    """
    A parsed ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest challenge,
    as a provider sends it to us (RFC 7616 §3.3).

    :ivar algorithm: canonical name: ``MD5``, ``SHA-256``, ``MD5-sess`` or
        ``SHA-256-sess``.
    :ivar qops: the qop options offered, lower case, in the server's order;
        empty for an RFC 2069 challenge.
    :ivar stale: the server says our previous response was right but its
        nonce is too old: answer again with the same credentials, without
        treating it as a failure.
    """

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qops: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    @property
    def qop(self) -> str | None:
        """The qop we answer with: ``auth``, else ``auth-int``, else none."""
        for choice in ("auth", "auth-int"):
            if choice in self.qops:
                return choice
        return None


def _client_algorithm(name: str | None) -> str | None:
    if name is None:
        return "MD5"
    # RFC 7616 §3.3: case-insensitive; the -sess variants (RFC 7616 §3.4.2)
    # are spelled "MD5-sess" and "SHA-256-sess" in the registry.
    upper = name.upper()
    session = upper.endswith("-SESS")
    base = upper.removesuffix("-SESS")
    if base not in ALGORITHMS:
        return None
    return base + "-sess" if session else base


def parse_challenge(value: str) -> DigestChallenge:
    """
    Parse one ``WWW-Authenticate`` or ``Proxy-Authenticate`` field value.

    :raises DigestError: for another scheme, a syntax error, a missing
        ``realm`` or ``nonce``, an algorithm we cannot compute, or only qop
        options we do not know (then no response of ours could be right).
    """
    stripped = value.lstrip(_LWS)
    end = 0
    while end < len(stripped) and stripped[end] in _TOKEN_CHARS:
        end += 1
    scheme = stripped[:end]
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported authentication scheme {scheme!r}")
    if end < len(stripped) and stripped[end] not in _LWS:
        raise DigestError("malformed Digest challenge")
    params = parse_auth_params(stripped[end:])
    missing = [name for name in ("realm", "nonce") if name not in params]
    if missing:
        raise DigestError("missing Digest parameter(s): " + ", ".join(missing))
    algorithm = _client_algorithm(params.get("algorithm"))
    if algorithm is None:
        raise DigestError(f"unsupported algorithm {params['algorithm']!r}")
    qops: tuple[str, ...] = ()
    if "qop" in params:
        qops = tuple(q.strip().lower() for q in params["qop"].split(",") if q.strip())
        if not {"auth", "auth-int"} & set(qops):
            raise DigestError(f"unsupported qop {params['qop']!r}")
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=algorithm,
        qops=qops,
        opaque=params.get("opaque"),
        stale=params.get("stale", "false").lower() == "true",
    )


def _strength(challenge: DigestChallenge) -> int:
    return 1 if challenge.algorithm.upper().startswith("SHA-256") else 0


def select_challenge(values: Iterable[str]) -> DigestChallenge | None:
    """
    The challenge to answer among several ``WWW-Authenticate`` (or
    ``Proxy-Authenticate``) values: the strongest algorithm we support, the
    server's order among equals (RFC 7616 §3.7, RFC 8760 §2.4); :class:`None`
    when none is usable.
    """
    usable = []
    for value in values:
        try:
            usable.append(parse_challenge(value))
        except DigestError:
            continue
    if not usable:
        return None
    return max(usable, key=_strength)  # max keeps the first of equals


def new_cnonce() -> str:
    """A fresh client nonce: 128 random bits, URL-safe base64."""
    return base64.urlsafe_b64encode(os.urandom(16)).decode("ascii").rstrip("=")


def authorization_for(
    challenge: DigestChallenge,
    method: str,
    uri: str,
    username: str,
    password: str,
    *,
    cnonce: str,
    nc: int = 1,
    body: bytes | None = None,
) -> str:
    """
    The ``Authorization`` / ``Proxy-Authorization`` field value answering
    ``challenge`` for a request (RFC 7616 §3.4, RFC 3261 §22.2/§22.3).

    :param uri: the Request-URI exactly as the request carries it.
    :param username: the authentication user (may differ from the From
        user at a SIP provider).
    :param cnonce: the client nonce (see :func:`new_cnonce`); ignored for an RFC
        2069 challenge without qop.
    :param nc: how many requests this nonce has answered, this one
        included (1 for the first); it must grow with each reuse.
    :param body: the message body, used only for ``qop=auth-int``.
    :raises ValueError: for ``nc`` outside 1..2**32-1.
    """
    if not 0 < nc < 2**32:
        raise ValueError(f"nonce count {nc} out of range")
    base = challenge.algorithm.upper().removesuffix("-SESS")
    h = ALGORITHMS[base]
    qop = challenge.qop
    nc_text = f"{nc:08x}"
    ha1 = h(f"{username}:{challenge.realm}:{password}".encode())
    if challenge.algorithm.upper().endswith("-SESS"):
        # RFC 7616 §3.4.2: H(H(user:realm:password) ":" nonce ":" cnonce)
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}".encode())
    response = _response(h, ha1, challenge.nonce, nc_text, cnonce, qop, method, uri, body)
    parts = [
        f"Digest username={_quote(username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={challenge.algorithm}",
    ]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_quote(cnonce)}"]
    return ", ".join(parts)


# -- verification -------------------------------------------------------------


class Verdict(enum.Enum):
    """
    The outcome of checking a Digest response.

    :cvar OK: authenticated.
    :cvar STALE: the response was right, but its nonce has expired or its
        nonce count was reused: challenge again with ``stale=true``.
    :cvar INVALID: wrong password, unknown user, forged nonce, wrong realm
        or digest-uri: an authentication failure.
    """

    OK = "ok"
    STALE = "stale"
    INVALID = "invalid"


class NonceCountTracker:
    """
    The highest ``nc`` seen for each nonce (RFC 7616 §3.4), with bounded
    memory.

    Entries leave when their nonce expires. When more than ``max_entries``
    nonces are in use, the least recently used are evicted, and the tracker
    remembers the newest issue time it evicted: an untracked nonce issued at
    or before that time can no longer be proven fresh, so it is answered as
    stale (the client retries with a new nonce) rather than accepted.

    Thread-safe: the registrar verifies on the reactor thread, and inside a
    store's transaction on a store thread
    (:class:`clicktodial.interfaces.IVerifiedRegistration`).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._max_entries = max_entries
        # nonce -> (issued_at, expires_at, last nc)
        self._entries: OrderedDict[str, tuple[float, float, int]] = OrderedDict()
        self._evicted_issued_before = float("-inf")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def accept(self, nonce: str, issued_at: float, expires_at: float, nc: int, now: float) -> bool:
        """
        Record ``nc`` for ``nonce``; tell whether it is strictly higher than
        every count seen before for that nonce.
        """
        with self._lock:
            entry = self._entries.get(nonce)
            if entry is None:
                if issued_at <= self._evicted_issued_before:
                    return False
                self._expire(now)
                while len(self._entries) >= self._max_entries:
                    _, (evicted_at, _, _) = self._entries.popitem(last=False)
                    self._evicted_issued_before = max(self._evicted_issued_before, evicted_at)
                self._entries[nonce] = (issued_at, expires_at, nc)
                return True
            if nc <= entry[2]:
                return False
            self._entries[nonce] = (entry[0], entry[1], nc)
            self._entries.move_to_end(nonce)
            return True

    def _expire(self, now: float) -> None:
        # Entries are roughly in first-use order; drop expired ones from the
        # old end, stopping at the first live one (cheap amortised cleanup).
        entries = self._entries
        while entries:
            nonce, (_, expires_at, _) = next(iter(entries.items()))
            if expires_at > now:
                break
            del entries[nonce]


class DigestAuthenticator:
    """
    Issues challenges and checks Digest responses for one realm.

    :param clock: the time source (``clock.seconds()``).
    :param realm: the protection realm (RFC 3261 §22.1: usually the domain).
    :param secret: the nonce HMAC key; daemons sharing a domain share it
        so that each accepts the others' nonces. At least 16 bytes.
    :param nonce_lifetime: seconds a nonce stays fresh.
    :param max_tracked_nonces: bound of the :class:`NonceCountTracker`.
    :param algorithms: the algorithms offered, preferred first.
    """

    def __init__(
        self,
        clock: IReactorTime,
        realm: str,
        secret: bytes,
        nonce_lifetime: float = 300.0,
        max_tracked_nonces: int = 100_000,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        if nonce_lifetime <= 0:
            raise ValueError("nonce_lifetime must be positive")
        offered = []
        for name in algorithms:
            canonical = _canonical_algorithm(name)
            if canonical is None:
                raise ValueError(f"unsupported digest algorithm {name!r}")
            offered.append(canonical)
        if not offered:
            raise ValueError("at least one digest algorithm must be offered")
        self._clock = clock
        self.realm = realm
        self._realm_bytes = realm.encode()
        # HMAC-SHA256 keyed once (RFC 2104 §2): the hash states after the inner and the
        # outer padded key, copied per nonce; hmac.digest hashes the key again each time.
        key = secret if len(secret) <= _HMAC_BLOCK else hashlib.sha256(secret).digest()
        key = key.ljust(_HMAC_BLOCK, b"\0")
        self._hmac_inner = hashlib.sha256(key.translate(_IPAD))
        self._hmac_outer = hashlib.sha256(key.translate(_OPAD))
        self.nonce_lifetime = nonce_lifetime
        self.algorithms: tuple[str, ...] = tuple(offered)
        self._tracker = NonceCountTracker(max_tracked_nonces)
        # Each challenge's text before and after its nonce, written by format_challenge
        # once (a nonce is base64url: nothing in it needs quoting), by ``stale``.
        self._challenge_texts: dict[bool, list[list[str]]] = {}
        for stale in (False, True):
            texts = [
                format_challenge(realm, _NONCE_MARK, algorithm, stale=stale).split(_NONCE_MARK)
                for algorithm in self.algorithms
            ]
            if any(len(parts) != 2 for parts in texts):
                raise ValueError(f"bad realm {realm!r}")
            self._challenge_texts[stale] = texts

    # nonces

    def _mac(self, head: bytes) -> bytes:
        # HMAC-SHA256(secret, head + realm), truncated: the keyed states copied (C calls).
        inner = self._hmac_inner.copy()
        inner.update(head + self._realm_bytes)
        outer = self._hmac_outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:_MAC_LEN]

    def new_nonce(self) -> str:
        """A fresh nonce stamped with the current time."""
        millis = int(self._clock.seconds() * 1000)
        head = max(0, millis).to_bytes(_TS_LEN, "big") + os.urandom(_RANDOM_LEN)
        raw = binascii.b2a_base64(head + self._mac(head), newline=False)
        return raw.translate(_TO_URLSAFE).decode("ascii")

    def nonce_issued_at(self, nonce: str) -> float | None:
        """
        When ``nonce`` was issued (clock seconds), or :class:`None` if it is not a
        nonce of ours (bad form or bad MAC, checked in constant time).
        """
        if len(nonce) != _NONCE_TEXT_LEN:
            return None
        try:
            # (base64.urlsafe_b64decode's work: binascii.Error is a ValueError)
            raw = binascii.a2b_base64(nonce.encode("ascii").translate(_FROM_URLSAFE))
        except (ValueError, UnicodeEncodeError):
            return None
        if len(raw) != _NONCE_LEN:
            return None
        head, mac = raw[: _TS_LEN + _RANDOM_LEN], raw[_TS_LEN + _RANDOM_LEN :]
        if not hmac.compare_digest(mac, self._mac(head)):
            return None
        return int.from_bytes(raw[:_TS_LEN], "big") / 1000.0

    # challenges

    def challenges(self, stale: bool = False) -> list[str]:
        """
        The ``WWW-Authenticate`` values for a 401: one per offered
        algorithm, all with the same fresh nonce, SHA-256 first.
        """
        nonce = self.new_nonce()
        return [nonce.join(parts) for parts in self._challenge_texts[stale]]

    # verification

    def check_nonce(self, credentials: DigestCredentials) -> float | None:
        """
        Cheap first check, before any store lookup: the issue time of the
        response's nonce if it is one of ours for our realm and an offered
        algorithm, else :class:`None` (an authentication failure).
        """
        if credentials.realm != self.realm:
            return None
        if credentials.algorithm not in self.algorithms:
            return None
        return self.nonce_issued_at(credentials.nonce)

    def verify(
        self, credentials: DigestCredentials, method: str, ha1: str | None, issued_at: float
    ) -> Verdict:
        """
        Check a response against the stored HA1 for its algorithm.

        :param ha1: the user's HA1 for ``credentials.algorithm``; :class:`None` for
            an unknown user (a dummy HA1 is hashed instead, so an unknown
            user costs the same work and gets the same verdict as a wrong
            password: no user enumeration).
        :param issued_at: what :func:`check_nonce` returned.
        """
        algorithm = credentials.algorithm
        expected = _response(
            _hash_of(algorithm),
            ha1 if ha1 is not None else _DUMMY_HA1[algorithm],
            credentials.nonce,
            credentials.nc,
            credentials.cnonce,
            credentials.qop,
            method,
            credentials.uri,
            None,
        )
        matches = hmac.compare_digest(expected.encode(), credentials.response.encode())
        if not matches or ha1 is None:
            return Verdict.INVALID
        now = self._clock.seconds()
        expires_at = issued_at + self.nonce_lifetime
        if now >= expires_at:
            # RFC 7616 §3.3: stale only because the digest was right.
            return Verdict.STALE
        if not self._tracker.accept(
            credentials.nonce, issued_at, expires_at, credentials.nc_value, now
        ):
            return Verdict.STALE
        return Verdict.OK

    @property
    def tracked_nonces(self) -> int:
        """How many nonces the replay tracker holds now."""
        return len(self._tracker)


# Responses for unknown users are computed against these, so that the work
# done does not depend on whether the user exists.
_DUMMY_HA1 = {name: h(os.urandom(16)) for name, h in ALGORITHMS.items()}
