"""
The daemon's SIP stack, assembled: transport → transaction layer → request router →
UA core and the transaction users behind it (the registrar; later the call controller).

::

    SIPTransportLayer ──▶ (the daemon: AdmissionControl, clicktodial.service) ──▶
    TransactionLayer ──▶ RequestRouter ───────────────────────┬─▶ REGISTER: Registrar
                                                              └─▶ everything else: UserAgent
                                                                   └─▶ IIncomingCallHandler
                                                                       (default: IncomingRefuser)

The router hands each new request whose method has a handler (``REGISTER`` →
:meth:`Registrar.handle_register`) to it, and every other one, and every CANCEL, ACK and
stray response, to the UA core, which runs the RFC 3261 §8.2 checks (501 + ``Allow``, 416,
420, 415), keeps dialogs, and gives requests outside a dialog to its
:class:`~clicktodial.interfaces.IIncomingCallHandler`. Until the click-to-dial controller
plugs in (:meth:`SIPStack.set_incoming_call_handler`), that handler is
:class:`IncomingRefuser`: OPTIONS gets 200 with ``Allow``/``Accept``/``Supported``
(RFC 3261 §11.2), an INVITE gets 403 (incoming calls are not a feature of the daemon),
INFO and UPDATE outside a dialog 481.

Hooks for the application: :attr:`SIPStack.user_agent` (start calls with
``user_agent.invite``), :meth:`SIPStack.set_incoming_call_handler`, and
:meth:`RequestRouter.add_method` for a method served outside the UA core.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import cast

from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.config import RegistrarConfig, SipConfig
from clicktodial.interfaces import ILocationStore, IUserStore, IVerifiedRegistration
from clicktodial.sip.address import Source
from clicktodial.sip.interfaces import IIncomingCallHandler, ISessionHandler, ITransactionUser
from clicktodial.sip.message import Request, Response
from clicktodial.sip.precheck import ACCEPTED_TYPES, SUPPORTED_OPTIONS, uas_precheck
from clicktodial.sip.registrar import Registrar, settings_from_config
from clicktodial.sip.transactions import ServerTransaction, Timers, TransactionLayer
from clicktodial.sip.transport import SIPTransportLayer
from clicktodial.sip.ua import (
    ALLOWED_METHODS,
    IncomingCall,
    IncomingRequest,
    UserAgent,
)
from clicktodial.throttle import AuthThrottle

__all__ = [
    "IncomingRefuser",
    "MethodHandler",
    "RegisterObserver",
    "RequestRouter",
    "SIPStack",
]

log = Logger(namespace="clicktodial.sip.stack")

#: A transaction user for one method: gets each new server transaction of that method and
#: must answer it (``server_tx.respond``), now or later.
MethodHandler = Callable[[ServerTransaction, Request], None]

#: Told of each REGISTER answered: (request, final response, seconds taken).
RegisterObserver = Callable[[Request, Response, float], object]

#: Media types an ``Accept`` may name for us to answer an INVITE with SDP (RFC 3261 §8.2.3).
_SDP_ACCEPTS = frozenset({"application/sdp", "application/*", "*/*"})


@implementer(ITransactionUser)
class RequestRouter:
    """
    The transaction layer's user: hands new requests to the handler registered for their
    method, and everything else to the UA core.

    :ivar user_agent: the :class:`UserAgent` (dialogs, INVITE, OPTIONS, §8.2 checks).
    """

    def __init__(self, user_agent: UserAgent) -> None:
        self.user_agent = user_agent
        self._handlers: dict[str, MethodHandler] = {}

    @property
    def methods(self) -> tuple[str, ...]:
        """Every method we serve, for ``Allow`` (RFC 3261 §20.5): the UA core's and ours."""
        return ALLOWED_METHODS + tuple(m for m in self._handlers if m not in ALLOWED_METHODS)

    def add_method(self, method: str, handler: MethodHandler) -> None:
        """
        Serve new requests of ``method`` with ``handler`` instead of the UA core (which
        then never sees them: ``handler`` makes the checks RFC 3261 §8.2 asks of it).

        :raises ValueError: for ACK and CANCEL (the transaction layer and the UA core
            deal with them), or a method that already has a handler.
        """
        if method in ("ACK", "CANCEL"):
            raise ValueError(f"{method} cannot be routed away from the UA core")
        if method in self._handlers:
            raise ValueError(f"{method} already has a handler")
        self._handlers[method] = handler

    def remove_method(self, method: str) -> None:
        """Give requests of ``method`` back to the UA core."""
        self._handlers.pop(method, None)

    def precheck(self, request: Request) -> Response | None:
        """
        The RFC 3261 §8.2.1-§8.2.3 checks of the UA core, with ``Allow`` listing every
        method we serve (:func:`clicktodial.sip.precheck.uas_precheck`).
        """
        methods = self.methods
        return uas_precheck(request, methods, SUPPORTED_OPTIONS, ACCEPTED_TYPES)

    # -- ITransactionUser --------------------------------------------------------------

    def request_received(self, server_tx: ServerTransaction, request: Request) -> None:
        """A new request: to its method's handler, or to the UA core."""
        handler = self._handlers.get(request.method)
        if handler is None:
            self.user_agent.request_received(server_tx, request)
        else:
            handler(server_tx, request)

    def cancel_received(self, server_tx: ServerTransaction) -> None:
        """A CANCEL matched an INVITE server transaction: only the UA core has INVITEs."""
        self.user_agent.cancel_received(server_tx)

    def ack_received(self, request: Request, source: object) -> None:
        """An ACK for a 2xx: the UA core's (§13.3.1.4)."""
        self.user_agent.ack_received(request, source)

    def stray_response(self, response: Response) -> None:
        """A response matching no client transaction: the UA core's (§13.2.2.4)."""
        self.user_agent.stray_response(response)


@implementer(IIncomingCallHandler)
class IncomingRefuser:
    """
    What the daemon does with requests outside a dialog until an application takes them:

    - OPTIONS: 200 with ``Allow``, ``Accept`` and ``Supported`` (RFC 3261 §11.2);
    - INVITE: 403: phones may register and be called, but calls *to* the daemon are not a
      feature (RFC 3261 §21.4.4: "the server understood the request, but is refusing to
      fulfill it"; retrying will not help). An ``Accept`` without SDP gets 406 first
      (RFC 3261 §8.2.3, RFC 4475 §3.3.15);
    - anything else (INFO, UPDATE: methods that only make sense inside a dialog, RFC 6086
      §4.2.1, RFC 3311 §5.2): 481, as for a request of a dialog that does not exist.

    :ivar allow: returns the methods to list in ``Allow``.
    """

    def __init__(self, allow: Callable[[], Collection[str]]) -> None:
        self.allow = allow

    def incoming_call(self, call: IncomingCall) -> ISessionHandler | None:
        """Refuse the INVITE (see the class)."""
        request = call.request
        accepts = _media_types(request.headers.get_all("Accept"))
        if "Accept" in request.headers and not accepts & _SDP_ACCEPTS:
            call.reject(406, "Not Acceptable (Accept Lacks application/sdp)")
        else:
            call.reject(403, "Forbidden (Incoming Calls Are Not Served)")
        log.info(
            "refused incoming INVITE to {uri}",
            uri=str(request.uri),
            call_id=request.headers.get("Call-ID"),
        )
        return None

    def request_received(self, request: IncomingRequest) -> None:
        """OPTIONS: 200 listing what we do; other methods: 481."""
        if request.method == "OPTIONS":
            headers = [
                ("Allow", ", ".join(self.allow())),
                ("Accept", ", ".join(ACCEPTED_TYPES)),
            ]
            if SUPPORTED_OPTIONS:
                headers.append(("Supported", ", ".join(SUPPORTED_OPTIONS)))
            request.respond(200, headers=headers)
        else:
            request.respond(481, "Call/Transaction Does Not Exist (Outside Any Dialog)")


def _media_types(values: Iterable[str]) -> set[str]:
    return {value.split(";", 1)[0].strip().lower() for value in values}


class SIPStack(MultiService):
    """
    The daemon's SIP services: ``transport`` (the transports of ``config``) and, above it,
    the transaction layer, the UA core and the registrar for ``config.domain``.

    The transaction layer sends through ``transport``, so it is built after it: the
    caller hands the transport its handler with :meth:`SIPTransportLayer.connect`, either
    :attr:`transactions` itself or what it puts in front of them (the daemon's admission
    control: :func:`clicktodial.service.build_service`).

    Starting it starts the registrar (its purge timer), then listens; stopping it stops
    listening first. The stores must be usable before it starts.

    :ivar transport: the :class:`SIPTransportLayer`.
    :ivar transactions: the :class:`TransactionLayer`.
    :ivar user_agent: the :class:`UserAgent` (start calls with ``user_agent.invite``).
    :ivar router: the :class:`RequestRouter` (``add_method`` to serve a method directly).
    :ivar registrar: the :class:`Registrar`.
    :ivar register_observers: told of each REGISTER answered, statelessly or not (the
        daemon's metrics count them).

    ``registrations``: the registrar's one-operation REGISTERs
    (:class:`~clicktodial.sip.registrar.Registrar`'s parameter of that name).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        config: SipConfig,
        registrar_config: RegistrarConfig,
        users: IUserStore,
        locations: ILocationStore,
        transport: SIPTransportLayer,
        *,
        register_observers: Iterable[RegisterObserver] = (),
        registrations: IVerifiedRegistration | None = None,
    ) -> None:
        super().__init__()
        self.clock = reactor
        self.config = config
        self.timers = Timers(t1=config.t1, t2=config.t2, t4=config.t4)
        self.transport = transport
        self.register_observers = tuple(register_observers)
        registrar_settings, throttle_settings = settings_from_config(registrar_config)
        self.registrar = Registrar(
            reactor,
            users,
            locations,
            config.domain,
            registrar_settings,
            AuthThrottle(reactor, throttle_settings),
            flows=self.transport,
            registrations=registrations,
        )
        self.user_agent = UserAgent(
            reactor,
            IncomingRefuser(lambda: self.router.methods),
            timers=self.timers,
            user_agent=config.user_agent,
            # A phone's Contact and Record-Route never choose where the daemon's
            # in-dialog requests go (docs/security.md).
            pin_flows=True,
            # The router (built next, around the core) knows the methods served.
            precheck=lambda request: self.router.precheck(request),
        )
        self.router = RequestRouter(self.user_agent)
        self.router.add_method("REGISTER", self._register)
        self.transactions = TransactionLayer(
            reactor, self.transport, self.router, self.timers, stateless=self._stateless
        )
        self.user_agent.attach(self.transactions)

        self.registrar.setServiceParent(self)
        self.transport.setServiceParent(self)

    def set_incoming_call_handler(self, handler: IIncomingCallHandler) -> None:
        """Hand new INVITEs and other requests outside a dialog to ``handler``."""
        self.user_agent.serve_incoming(handler)

    def _register(self, server_tx: ServerTransaction, request: Request) -> None:
        # The registrar makes its own §10.3 checks (its 420 knows "path") and never fails.
        source = cast(Source, server_tx.source)
        started = self.clock.seconds()
        self.registrar.handle_register(request, source).addCallback(
            self._respond, server_tx, started
        )

    def _stateless(self, request: Request, source: object) -> Response | None:
        # The first REGISTER of a registration (no credentials) is challenged without a
        # server transaction: see Registrar.stateless_challenge.
        if request.method != "REGISTER" or not isinstance(source, Source):
            return None
        response = self.registrar.stateless_challenge(request, source)
        if response is None:
            return None
        response.headers.add("Server", self.config.user_agent)
        for observer in self.register_observers:
            observer(request, response, 0.0)
        return response

    def _respond(
        self, response: Response, server_tx: ServerTransaction, started: float = 0.0
    ) -> None:
        response.headers.add("Server", self.config.user_agent)
        # Read before respond(): a non-INVITE server transaction lets go of its request
        # once the final response is sent.
        request = server_tx.request
        server_tx.respond(response)
        if self.register_observers:
            seconds = self.clock.seconds() - started
            for observer in self.register_observers:
                observer(request, response, seconds)
