"""
Answering 401/407 digest challenges as a UAC (RFC 3261 §22.2, §22.3; RFC
7616; RFC 8760 for SHA-256).  The computation lives in the wire-format
layer (L{clicktodial.sip.digest.authorization_for}); this module decides
whether a challenged request is sent again, and builds that request.

The rules: the first challenge of a request is answered when the
L{IClientCredentials} have credentials for its realm; a later one only if
it says C{stale=true} (our answer was right, the nonce too old) and no
stale retry was spent yet: otherwise the 401/407 is the final answer.
"""

from __future__ import annotations

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

__all__ = ["CHALLENGES", "ChallengeAnswers", "StaticCredentials", "authorized_copy"]

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


class ChallengeAnswers:
    """
    The challenges one request (and the copies of it sent with credentials)
    met so far, by status: how many were answered, and whether the one
    stale retry was used.
    """

    __slots__ = ("credentials", "_answered")

    def __init__(self, credentials: IClientCredentials) -> None:
        self.credentials = credentials
        #: status (401/407) -> challenges answered for it
        self._answered: dict[int, int] = {}

    def answerable(self, response: Response) -> bool:
        """Whether L{answer} would answer C{response} (nothing is spent)."""
        return self._find(response) is not None

    def answer(self, request: Request, response: Response) -> tuple[str, str] | None:
        """
        The C{(header, value)} that answers C{response}'s challenge to
        C{request}, or None when the 401/407 is final (no credentials for the
        realm, no usable Digest challenge, or a repeated challenge without
        C{stale=true}).
        """
        found = self._find(response)
        if found is None:
            return None
        challenge, username, password, answer_name = found
        self._answered[response.status] = self._answered.get(response.status, 0) + 1
        return answer_name, _authorization(challenge, request, username, password)

    def _find(self, response: Response) -> tuple[DigestChallenge, str, str, str] | None:
        names = CHALLENGES.get(response.status)
        if names is None:
            return None
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
            return None
        # ... and the strongest algorithm offered for it (RFC 8760 §2.4: SHA-256 first).
        challenge = select_challenge(value for value in values if _realm_of(value) == realm)
        if challenge is None:
            return None
        answered = self._answered.get(response.status, 0)
        if answered >= 2 or (answered == 1 and not challenge.stale):
            # RFC 7616 §3.3: a second challenge means the credentials were refused,
            # unless the nonce was only stale (one more try with the new nonce).
            return None
        username, password = secret
        return challenge, username, password, answer_name


def _realm_of(value: str) -> str | None:
    try:
        return parse_challenge(value).realm
    except DigestError:
        return None


def _authorization(
    challenge: DigestChallenge, request: Request, username: str, password: str
) -> str:
    return authorization_for(
        challenge,
        request.method,
        str(request.uri),
        username,
        password,
        cnonce=new_cnonce(),
        nc=1,
        body=request.body,
    )


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
