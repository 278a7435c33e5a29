"""
Matching messages to transactions: RFC 3261 §17.1.3 (responses to client
transactions) and §17.2.3 (requests to server transactions), with the RFC 2543
fallback for requests whose top Via branch lacks the ``z9hG4bK`` magic cookie.

A branch that is exactly ``z9hG4bK`` (RFC 4475 §3.2.1, ``badbranch.dat``)
carries no transaction identifier: it is matched the RFC 2543 way, like a
request with no branch at all, so such a request is processed normally and
two of them never collide on the empty identifier.
"""

from __future__ import annotations

from clicktodial.sip.headers import Via
from clicktodial.sip.message import Request, Response

__all__ = [
    "MAGIC_COOKIE",
    "ServerKey",
    "client_key",
    "has_rfc3261_branch",
    "is_rfc2543",
    "response_key",
    "server_key",
    "with_method",
    "with_to_tag",
]

#: RFC 3261 §8.1.1.7: branches of RFC 3261 elements start with this.
MAGIC_COOKIE = "z9hG4bK"

#: ("3261", branch, sent-by host, sent-by port, method) or
#: ("2543", Request-URI, From tag, Call-ID, CSeq number, top Via, method, To tag).
ServerKey = tuple[object, ...]

_RFC3261 = "3261"
_RFC2543 = "2543"


def has_rfc3261_branch(branch: str | None) -> bool:
    """Whether ``branch`` is a usable RFC 3261 transaction identifier."""
    return (
        branch is not None and len(branch) > len(MAGIC_COOKIE) and branch.startswith(MAGIC_COOKIE)
    )


def client_key(branch: str, method: str) -> tuple[str, str]:
    """
    §17.1.3: a response matches the client transaction whose branch is its
    top Via branch and whose method is its CSeq method (so the CANCEL and
    the INVITE it cancels, which share a branch, stay apart).
    """
    return (branch, method)


def response_key(response: Response) -> tuple[str, str] | None:
    """The :func:`client_key` for a received response; ``None`` without a branch."""
    branch = response.top_via.branch
    if branch is None:
        return None
    return (branch, response.cseq.method)


def server_key(request: Request, top_via: Via) -> ServerKey:
    """
    §17.2.3: the key of the server transaction ``request`` belongs to.  An
    ACK is keyed as the INVITE it acknowledges; a CANCEL has its own key
    (:func:`with_method` gives the INVITE's).

    :raises ValueError: (``HeaderParseError``) a header needed is malformed.
    """
    method = request.method
    if method == "ACK":
        method = "INVITE"
    branch = top_via.branch
    if has_rfc3261_branch(branch):
        host, port = top_via.sent_by
        return (_RFC3261, branch, host.lower(), port, method)
    # RFC 3261 §17.2.3, last paragraphs: RFC 2543 compatibility.
    return (
        _RFC2543,
        str(request.uri),
        request.from_.tag,
        request.call_id,
        request.cseq.seq,
        top_via.serialize(),
        method,
        request.to.tag,
    )


def is_rfc2543(key: ServerKey) -> bool:
    """Whether ``key`` was built by the RFC 2543 fallback."""
    return key[0] == _RFC2543


def with_method(key: ServerKey, method: str) -> ServerKey:
    """``key`` for another method (the INVITE a CANCEL refers to, §9.2)."""
    if key[0] == _RFC3261:
        return key[:4] + (method,)
    return key[:6] + (method,) + key[7:]


def with_to_tag(key: ServerKey, to_tag: str | None) -> ServerKey:
    """An RFC 2543 ``key`` with another To tag (an ACK carries the response's)."""
    return key[:7] + (to_tag,)
