"""
The interim UAS core: answers every request statelessly until the transaction layer,
registrar and call controller are wired in.

OPTIONS gets 200 with what we accept; every other request first goes through the RFC 3261
§8.2 UAS checks (:func:`uas_precheck`, which the later UA core and registrar reuse), and a
request that passes them but that we do not serve yet gets 501 with ``Allow``.
ACK is never answered (§17.1.1.3).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.config import SipConfig
from clicktodial.sip.headers import HeaderParseError
from clicktodial.sip.interfaces import IMessageHandler, ISIPTransport
from clicktodial.sip.message import Request, Response, make_response, new_tag
from clicktodial.sip.transport import SIPTransportLayer, TransportError, stateless_to_tag

__all__ = [
    "ACCEPTED_TYPES",
    "DAEMON_METHODS",
    "SERVED_METHODS",
    "SUPPORTED_OPTIONS",
    "StatelessUAS",
    "interim_sip_service",
    "options_response",
    "uas_precheck",
]

log = Logger(namespace="clicktodial.sip.core")

#: The methods the daemon recognises (it will serve all of them; §8.2.1 answers others 501).
DAEMON_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER")
#: What the interim core serves: the ``Allow`` it advertises.
SERVED_METHODS = ("OPTIONS",)
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


def options_response(
    request: Request,
    allow: Collection[str],
    supported_options: Collection[str],
    accepted_types: Collection[str],
    *,
    to_tag: str | None = None,
) -> Response:
    """
    200 to an OPTIONS (RFC 3261 §11.2): ``Allow``, ``Accept`` and, when we support any
    option-tag, ``Supported``.
    """
    response = make_response(request, 200, to_tag=to_tag or new_tag())
    response.headers.add("Allow", ", ".join(allow))
    response.headers.add("Accept", ", ".join(accepted_types))
    if supported_options:
        response.headers.add("Supported", ", ".join(supported_options))
    return response


@implementer(IMessageHandler)
class StatelessUAS:
    """
    The interim :class:`IMessageHandler`: answers each request statelessly (§8.2.7), with
    To tags derived from the request so that retransmissions get the same response.

    :ivar transport: where responses are sent (the :class:`ISIPTransport`).
    :ivar user_agent: the ``Server`` header value.
    """

    def __init__(
        self,
        transport: ISIPTransport,
        user_agent: str,
        *,
        allowed_methods: Collection[str] = DAEMON_METHODS,
        served_methods: Collection[str] = SERVED_METHODS,
        supported_options: Collection[str] = SUPPORTED_OPTIONS,
        accepted_types: Collection[str] = ACCEPTED_TYPES,
    ) -> None:
        self.transport = transport
        self.user_agent = user_agent
        self.allowed_methods = allowed_methods
        self.served_methods = served_methods
        self.supported_options = supported_options
        self.accepted_types = accepted_types

    def request_received(self, request: Request, source: object) -> None:
        """Answer ``request`` (never an ACK): a §8.2 rejection, 200 to OPTIONS, or 501."""
        if request.method == "ACK":
            return
        to_tag = stateless_to_tag(request.headers)
        response = uas_precheck(
            request,
            self.allowed_methods,
            self.supported_options,
            self.accepted_types,
            allow=self.served_methods,
            to_tag=to_tag,
        )
        if response is None:
            if request.method == "OPTIONS":
                response = options_response(
                    request,
                    self.served_methods,
                    self.supported_options,
                    self.accepted_types,
                    to_tag=to_tag,
                )
            else:
                # The issue: requests the daemon cannot serve yet get 501 with Allow.
                response = _reject(
                    request, 501, None, to_tag, [("Allow", ", ".join(self.served_methods))]
                )
        response.headers.add("Server", self.user_agent)
        log.debug(
            "{method} from {peer}: {status}",
            method=request.method,
            peer=str(source),
            status=response.status,
            call_id=request.headers.get("Call-ID"),
        )
        try:
            self.transport.send_response(response, source)
        except TransportError as e:
            log.info(
                "cannot send {status} to {peer}: {error}",
                status=response.status,
                peer=str(source),
                error=str(e),
                call_id=request.headers.get("Call-ID"),
            )

    def response_received(self, response: Response, source: object) -> None:
        """No request is ever sent from here: a response is stray, and dropped."""
        log.info(
            "dropped stray {status} from {peer}",
            status=response.status,
            peer=str(source),
            call_id=response.headers.get("Call-ID"),
        )


def interim_sip_service(config: SipConfig, reactor: IReactorTime) -> SIPTransportLayer:
    """The SIP transports of ``config`` answering through a :class:`StatelessUAS` (a service)."""
    transport = SIPTransportLayer(reactor, config)
    transport.handler = StatelessUAS(transport, config.user_agent)
    return transport
