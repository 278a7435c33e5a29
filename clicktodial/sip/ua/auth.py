"""
Answering 401/407 digest challenges as a UAC (RFC 3261 §22.2, §22.3; RFC
7616; RFC 8760 for SHA-256): the one digest answerer of the daemon, used by
the UA core for INVITE, re-INVITE and BYE and by the trunks' provider
registration for REGISTER.  The computation lives in the wire-format layer
(L{clicktodial.sip.digest.authorization_for}); this module decides whether a
challenged request is sent again, and builds that request.

The rules (L{DigestAnswerer}): a challenge is answered when the
L{IClientCredentials} have credentials for its realm and a Digest algorithm
we support is offered (the strongest: RFC 8760 §2.4).  C{nc} counts per
nonce (RFC 7616 §3.4), so a nonce can be reused for the next request
(L{DigestAnswerer.preemptive}).  A challenge is final -- never answered --
when it repeats a nonce we already answered without C{stale=true} (the
provider refused those credentials: retrying would only lock the account),
or when the same request was already answered once and this challenge is not
stale (RFC 7616 §3.3), or after the one stale retry of a request.
"""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import implementer

from clicktodial.sip.digest import (
    DigestChallenge,
    DigestError,
    authorization_for,
    new_cnonce,
    parse_challenge,
    select_challenge,
)
from clicktodial.sip.interfaces import IClientCredentials
from clicktodial.sip.message import Request, Response

__all__ = [
    "CHALLENGES",
    "ChallengeRefused",
    "DigestAnswerer",
    "StaticCredentials",
    "authorized_copy",
]

#: The challenge statuses, with the header that challenges and the one that answers.
CHALLENGES = {
    401: ("WWW-Authenticate", "Authorization"),
    407: ("Proxy-Authenticate", "Proxy-Authorization"),
}


@implementer(IClientCredentials)
class StaticCredentials:
    """One username and password, for every realm or only for C{realms}."""

    __slots__ = ("username", "password", "realms")

    def __init__(
        self, username: str, password: str, realms: frozenset[str] | None = None
    ) -> None:
        self.username = username
        self.password = password
        self.realms = realms

    def credentials_for(self, realm: str) -> tuple[str, str] | None:
        if self.realms is not None and realm not in self.realms:
            return None
        return self.username, self.password


class ChallengeRefused(Exception):
    """A challenge we cannot or should not answer (the message says why)."""


class DigestAnswerer:
    """
    Answers the digest challenges met by one requester (a call leg's INVITE, a
    session's requests, a trunk's registration): see the module docstring.

    @param credentials: who we are, by realm.
    @param cnonce: makes client nonces (tests pass a fixed one).
    """

    __slots__ = ("credentials", "cnonce", "_last", "_nc", "_answered", "_stale_retried")

    def __init__(
        self, credentials: IClientCredentials, cnonce: Callable[[], str] = new_cnonce
    ) -> None:
        self.credentials = credentials
        self.cnonce = cnonce
        #: The last challenge answered, with the header that answers it.
        self._last: tuple[str, DigestChallenge] | None = None
        #: nonce -> the last nc sent with it (only the latest nonce is kept).
        self._nc: dict[str, int] = {}
        #: The challenge statuses (401, 407) the current request was answered for once
        #: already / retried for once as stale (a proxy's 407 and the UAS's 401 are two).
        self._answered: set[int] = set()
        self._stale_retried: set[int] = set()

    def new_request(self) -> None:
        """
        A new request starts (a registration round): its first challenge may be answered
        again; the nonce and its C{nc} are kept (L{preemptive}).
        """
        self._answered = set()
        self._stale_retried = set()

    def answerable(self, response: Response) -> bool:
        """Whether L{answer} would answer ``response`` (nothing is spent)."""
        try:
            self._find(response)
        except ChallengeRefused:
            return False
        return True

    def answer(self, request: Request, response: Response) -> tuple[str, str]:
        """
        The C{(header, value)} answering ``response`` (a 401 or 407 to ``request``) for
        the retry of ``request`` (same method and Request-URI; body for C{auth-int}).

        @raise ChallengeRefused: the 401/407 is final (no Digest challenge we support,
            no credentials for its realm, our credentials refused).
        """
        challenge, secret, name = self._find(response)
        if response.status in self._answered:
            self._stale_retried.add(response.status)
        self._answered.add(response.status)
        if challenge.nonce not in self._nc:
            self._nc = {challenge.nonce: 0}  # a new nonce: older ones are done with
        self._last = (name, challenge)
        return self._authorization(request, name, challenge, secret)

    def preemptive(self, request: Request) -> tuple[str, str] | None:
        """
        The header for a new request under the last nonce answered (C{nc} one higher), so
        that a refresh needs no extra round trip; None before any challenge.  A stale or
        expired nonce simply gets challenged again.
        """
        if self._last is None:
            return None
        name, challenge = self._last
        secret = self.credentials.credentials_for(challenge.realm)
        if secret is None:
            return None
        return self._authorization(request, name, challenge, secret)

    def forget(self) -> None:
        """Drop the nonce and every count (a registration starting from scratch)."""
        self._last = None
        self._nc = {}
        self.new_request()

    def _find(self, response: Response) -> tuple[DigestChallenge, tuple[str, str], str]:
        names = CHALLENGES.get(response.status)
        if names is None:
            raise ChallengeRefused(f"{response.status} is not a challenge")
        challenge_name, answer_name = names
        values = response.headers.get_all(challenge_name)
        # The first realm we have credentials for ...
        realm = secret = None
        for value in values:
            realm = _realm_of(value)
            secret = None if realm is None else self.credentials.credentials_for(realm)
            if secret is not None:
                break
        if secret is None:
            realms = sorted({r for r in map(_realm_of, values) if r is not None})
            raise ChallengeRefused(
                f"{response.status}: no credentials for realm(s) {', '.join(realms) or '-'}")
        # ... and the strongest algorithm offered for it (RFC 8760 §2.4: SHA-256 first).
        challenge = select_challenge(value for value in values if _realm_of(value) == realm)
        if challenge is None:
            raise ChallengeRefused(f"{response.status} without a Digest challenge we support")
        answered = response.status in self._answered
        refused = (
            (challenge.nonce in self._nc or answered) and not challenge.stale
        ) or (answered and response.status in self._stale_retried)
        if refused:
            # RFC 7616 §3.3: challenged again, not as stale: the credentials were refused.
            raise ChallengeRefused(
                f"{response.status}: our credentials for realm {challenge.realm!r}"
                " were refused")
        return challenge, secret, answer_name

    def _authorization(
        self, request: Request, name: str, challenge: DigestChallenge, secret: tuple[str, str]
    ) -> tuple[str, str]:
        nc = self._nc.get(challenge.nonce, 0) + 1
        self._nc[challenge.nonce] = nc
        username, password = secret
        value = authorization_for(
            challenge, request.method, str(request.uri), username, password,
            cnonce=self.cnonce(), nc=nc, body=request.body,
        )
        return name, value


def _realm_of(value: str) -> str | None:
    try:
        return parse_challenge(value).realm
    except DigestError:
        return None


def authorized_copy(request: Request, seq: int, header: tuple[str, str]) -> Request:
    """
    C{request} to send again with credentials: a new transaction (no Via: the
    layer adds one), CSeq C{seq}, the same Call-ID and tags (§22.2), and
    C{header} instead of an earlier answer of the same kind.
    """
    name, value = header
    lowered = name.lower()
    fields = [
        (field, text)
        for field, text in request.headers
        if field.lower() not in ("via", lowered)
    ]
    fields = [
        (field, f"{seq} {request.method}" if field.lower() == "cseq" else text)
        for field, text in fields
    ]
    fields.append((name, value))
    return Request(request.method, request.uri, fields, request.body)
