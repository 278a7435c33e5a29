"""
Answering a provider's digest challenges (RFC 3261 §22.2, §22.3) for one trunk: the
client-side bookkeeping around :func:`clicktodial.sip.digest.authorization_for`.

A :class:`DigestAnswerer` turns a 401 (``WWW-Authenticate``) or 407
(``Proxy-Authenticate``) into the header to add to the retried request, counts ``nc`` per
nonce (RFC 7616 §3.4: it grows with each reuse), and says when answering again is
pointless: the provider refused credentials computed for the very nonce it challenges
with again, without ``stale=true`` (a wrong user name or password: retrying would only
lock the account). The registration uses it for REGISTER; a call leg can use it for
INVITE and BYE.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from clicktodial.sip.digest import DigestChallenge, authorization_for, new_cnonce, select_challenge
from clicktodial.sip.message import Request, Response

__all__ = ["Answer", "ChallengeRefused", "DigestAnswerer"]

#: realm -> (user, password), or None when we have no credentials for that realm
CredentialsFor = Callable[[str], "tuple[str, str] | None"]


class ChallengeRefused(Exception):
    """A challenge we cannot or should not answer (the message says why)."""


@attrs.frozen
class Answer:
    """The header to add to the retried request: ``(name, value)``."""

    name: str
    value: str


class DigestAnswerer:
    """
    :param credentials_for: the trunk's credentials by realm.
    :param cnonce: makes client nonces (tests pass a fixed one).
    """

    def __init__(self, credentials_for: CredentialsFor,
                 cnonce: Callable[[], str] = new_cnonce) -> None:
        self.credentials_for = credentials_for
        self.cnonce = cnonce
        self._last: tuple[str, DigestChallenge] | None = None  # (header name, challenge)
        self._nc: dict[str, int] = {}

    def answer(self, request: Request, response: Response) -> Answer:
        """
        The header answering ``response`` (a 401 or 407 to ``request``) for the retry of
        ``request`` (same method and Request-URI, body for ``auth-int``).

        :raises ChallengeRefused: no usable Digest challenge, no credentials for its
            realm, or our answer to this same nonce was already refused.
        """
        if response.status == 401:
            challenge_header, answer_header = "WWW-Authenticate", "Authorization"
        elif response.status == 407:
            challenge_header, answer_header = "Proxy-Authenticate", "Proxy-Authorization"
        else:
            raise ChallengeRefused(f"{response.status} is not a challenge")
        challenge = select_challenge(response.headers.get_all(challenge_header))
        if challenge is None:
            raise ChallengeRefused(f"{response.status} without a Digest challenge we support")
        if challenge.nonce in self._nc and not challenge.stale:
            raise ChallengeRefused(
                f"{response.status}: the provider refused our credentials for realm"
                f" {challenge.realm!r}")
        credentials = self.credentials_for(challenge.realm)
        if credentials is None:
            raise ChallengeRefused(f"no credentials for realm {challenge.realm!r}")
        self._nc = {challenge.nonce: 0}  # a new nonce: older ones are done with
        self._last = (answer_header, challenge)
        return self._answer(request, answer_header, challenge, credentials)

    def preemptive(self, request: Request) -> Answer | None:
        """
        The header for a new request under the last nonce the provider gave (``nc`` one
        higher), so a refresh needs no extra round trip; ``None`` before any challenge.
        A stale or expired nonce simply gets challenged again.
        """
        if self._last is None:
            return None
        name, challenge = self._last
        credentials = self.credentials_for(challenge.realm)
        if credentials is None:
            return None
        return self._answer(request, name, challenge, credentials)

    def forget(self) -> None:
        """Drop the last challenge (a new registration starts from scratch)."""
        self._last = None
        self._nc = {}

    def _answer(self, request: Request, name: str, challenge: DigestChallenge,
                credentials: tuple[str, str]) -> Answer:
        nc = self._nc.get(challenge.nonce, 0) + 1
        self._nc[challenge.nonce] = nc
        user, password = credentials
        value = authorization_for(challenge, request.method, str(request.uri), user, password,
                                  cnonce=self.cnonce(), nc=nc, body=request.body)
        return Answer(name, value)
