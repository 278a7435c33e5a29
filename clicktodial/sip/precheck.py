"""
The RFC 3261 §8.2 checks a UAS makes before it processes a request (:func:`uas_precheck`:
501 + ``Allow``, 416, 420 + ``Unsupported``, 415 + ``Accept``, and a REGISTER's To), and
what they accept: the option-tags we support (:data:`SUPPORTED_OPTIONS`, RFC 3261 §19.2)
and the body types we understand (:data:`ACCEPTED_TYPES`). The UA core
(:mod:`clicktodial.sip.ua`) and the request router (:mod:`clicktodial.sip.stack`)
run them; an ACK is never answered (§17.1.1.3).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from clicktodial.sip.headers import HeaderParseError
from clicktodial.sip.message import Request, Response, make_response, new_tag

__all__ = ["ACCEPTED_TYPES", "SUPPORTED_OPTIONS", "uas_precheck"]

#: Option tags (RFC 3261 §19.2) we support: none yet.
SUPPORTED_OPTIONS: tuple[str, ...] = ()
#: Body types we understand (RFC 3261 §8.2.3; §13.2.1: every INVITE UA supports SDP).
ACCEPTED_TYPES = ("application/sdp",)

_URI_SCHEMES = frozenset(["sip", "sips", "tel"])


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _reject(
    request: Request,
    status: int,
    reason: str | None,
    to_tag: str | None,
    extra: Iterable[tuple[str, str]] = (),
) -> Response:
    response = make_response(request, status, reason, to_tag=to_tag or new_tag())
    for name, value in extra:
        response.headers.add(name, value)
    return response


def uas_precheck(
    request: Request,
    allowed_methods: Collection[str],
    supported_options: Collection[str],
    accepted_types: Collection[str],
    *,
    allow: Collection[str] | None = None,
    to_tag: str | None = None,
) -> Response | None:
    """
    The RFC 3261 §8.2 checks a UAS makes before processing a request, in the RFC's order;
    the response rejecting ``request``, or ``None`` when it passes (always ``None`` for an
    ACK, which is never answered).

    1. §8.2.1: a method not in ``allowed_methods`` → 501 with ``Allow``.
    2. §8.2.2.1: a Request-URI scheme other than sip/sips/tel → 416.
    3. §8.2.2.3: ``Require`` naming option-tags not in ``supported_options`` → 420 with
       ``Unsupported`` listing them (not for CANCEL).
    4. §8.2.3: a body whose ``Content-Type`` is not in ``accepted_types`` → 415 with
       ``Accept``; a ``Content-Encoding`` other than identity → 415 with ``Accept-Encoding``.
    5. §10.3 step 3 / RFC 4475 §3.3.4: a REGISTER whose To is not a SIP or SIPS URI → 400.

    :param allow: the methods the ``Allow`` header lists (default ``allowed_methods``).
    :param to_tag: the To tag of the response (default: a fresh one).
    """
    method = request.method
    if method == "ACK":
        return None
    allow_header = ("Allow", ", ".join(allowed_methods if allow is None else allow))
    if method not in allowed_methods:
        return _reject(request, 501, None, to_tag, [allow_header])
    if request.uri.scheme not in _URI_SCHEMES:
        return _reject(request, 416, None, to_tag)
    if method != "CANCEL":
        unsupported = [
            tag for tag in request.headers.get_all("Require") if tag not in supported_options
        ]
        if unsupported:
            return _reject(request, 420, None, to_tag, [("Unsupported", ", ".join(unsupported))])
    if request.body:
        accepted = {t.lower() for t in accepted_types}
        content_type = request.headers.get("Content-Type")
        if content_type is None or _media_type(content_type) not in accepted:
            return _reject(request, 415, None, to_tag, [("Accept", ", ".join(accepted_types))])
        encodings = [e.lower() for e in request.headers.get_all("Content-Encoding")]
        if any(e != "identity" for e in encodings):
            return _reject(request, 415, None, to_tag, [("Accept-Encoding", "identity")])
    if method == "REGISTER":
        try:
            to_is_sip = request.to.uri.is_sip
        except HeaderParseError:
            to_is_sip = False
        if not to_is_sip:
            return _reject(request, 400, "Bad Request (To is not a SIP or SIPS URI)", to_tag)
    return None
