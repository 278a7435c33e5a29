"""
The transaction layer (RFC 3261 §17): sits between the transport and the
transaction user (the UA core), matches every message to a transaction, and
creates the four state machines.

Data flows one way: the transport hands received messages to
:meth:`TransactionLayer.request_received` / :meth:`TransactionLayer.response_received`;
the layer hands new requests, CANCELs, ACKs for 2xx and stray responses to
the :class:`ITransactionUser`; the user sends requests with
:meth:`TransactionLayer.send_request` and answers with
:meth:`ServerTransaction.respond`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.sip.headers import Via
from clicktodial.sip.interfaces import (
    IMessageHandler,
    ISendFailureHandler,
    ISIPTransport,
    ITransactionUser,
)
from clicktodial.sip.message import Request, Response, make_response, new_branch, new_tag
from clicktodial.sip.transactions.base import (
    State,
    Timers,
    Transaction,
    TransactionCounts,
    is_reliable,
)
from clicktodial.sip.transactions.client import ClientTransaction, ResponseCallback
from clicktodial.sip.transactions.invite_client import InviteClientTransaction
from clicktodial.sip.transactions.invite_server import InviteServerTransaction
from clicktodial.sip.transactions.matching import (
    ServerKey,
    client_key,
    is_rfc2543,
    response_key,
    server_key,
    with_method,
    with_to_tag,
)
from clicktodial.sip.transactions.noninvite_client import NonInviteClientTransaction
from clicktodial.sip.transactions.noninvite_server import NonInviteServerTransaction
from clicktodial.sip.transactions.server import ServerTransaction
from clicktodial.sip.transport import TransportError
from clicktodial.timers import TimerQueues

if TYPE_CHECKING:
    from clicktodial.sip.address import Destination

__all__ = ["TransactionLayer"]

log = Logger(namespace="clicktodial.sip.transactions")

#: RFC 3261 Table 4 defaults.
DEFAULT_TIMERS = Timers()


@implementer(IMessageHandler, ISendFailureHandler)
class TransactionLayer:
    """
    Matches messages to RFC 3261 §17 transactions and runs their machines on
    ``clock``.

    :ivar user: the :class:`ITransactionUser`.
    :ivar counts: the :class:`TransactionCounts` (retransmissions) of every machine.
    :ivar stateless: (constructor argument) ``None``, or a callable given each new non-INVITE
        request (not CANCEL) before a server transaction is made for it; when it returns
        a final response, that response is sent statelessly (RFC 3261 §8.2.7)
        and no transaction is made: a retransmission of the request is asked
        again.  For answers that cost nothing to recompute and change no state,
        such as a registrar's first 401 challenge (Kamailio's ``sl_send_reply``).
    """

    def __init__(
        self,
        clock: IReactorTime,
        transport: ISIPTransport,
        user: ITransactionUser,
        timers: Timers = DEFAULT_TIMERS,
        *,
        stateless: Callable[[Request, object], Response | None] | None = None,
    ) -> None:
        self.clock = clock
        self.transport = transport
        self.user = user
        self.timers = timers
        self.counts = TransactionCounts()
        #: Every transaction timer (see ``Transaction``), and the UA core's on top: those
        #: of lingering states, and those a response usually cancels, in queues of their
        #: own (by length) on one reactor timer.
        self.linger_timers = TimerQueues(clock)
        self.guard_timers = self.linger_timers.sibling()
        #: The 64*T1 queue of the lingering states (Timers H, J, L, M).
        self.lingering = self.linger_timers.queue(timers.timeout)
        self._clients: dict[tuple[object, ...], ClientTransaction] = {}
        self._servers: dict[ServerKey, ServerTransaction] = {}
        self.stateless = stateless

    @property
    def active_count(self) -> int:
        """How many transactions (client and server) have not terminated."""
        return len(self._clients) + len(self._servers)

    @property
    def working_count(self) -> int:
        """
        How many transactions are doing work: waiting for our answer or a peer's, or
        retransmitting a request; not those that only wait out a timer to absorb
        retransmissions
        (:data:`~clicktodial.sip.transactions.base.LINGERING_STATES`).
        """
        return len(self._clients) + len(self._servers) - self.counts.lingering

    def terminate_all(self) -> int:
        """
        Terminate every transaction at once, silently, cancelling its timers
        (for shutdown: nothing is left on the reactor).  Returns how many
        there were.
        """
        transactions: list[Transaction] = [*self._clients.values(), *self._servers.values()]
        for tx in transactions:
            tx._terminate()
        return len(transactions)

    # -- client side ----------------------------------------------------------

    def send_request(
        self,
        request: Request,
        destination: Destination,
        on_response: ResponseCallback,
    ) -> ClientTransaction:
        """
        Start a client transaction for ``request`` towards ``destination``.

        A top Via (this host's address for ``destination.transport``, a fresh
        ``z9hG4bK`` branch, ``;rport``) is prepended, except to a CANCEL built by
        :meth:`ClientTransaction.cancel_request`, which must keep the branch of the
        INVITE it cancels (§9.1).  ``on_response`` receives every response the
        machine lets through and the local 408 (Timer B/F) or 503 (transport
        error: delivered from the clock, after this method returned).

        :raises ValueError: ``request`` is an ACK (use :func:`send_ack`).
        """
        method = request.method
        if method == "ACK":
            raise ValueError("an ACK is not a transaction: use TransactionLayer.send_ack()")
        if method == "CANCEL" and "Via" in request.headers:
            branch = request.top_via.branch or ""
        else:
            branch = self._add_via(request, destination)
        key = client_key(branch, method)
        reliable = is_reliable(destination.transport)
        tx: ClientTransaction
        if method == "INVITE":
            tx = InviteClientTransaction(
                self, request, destination, on_response, branch, reliable, key, State.CALLING
            )
        else:
            tx = NonInviteClientTransaction(
                self, request, destination, on_response, branch, reliable, key, State.TRYING
            )
        self._clients[key] = tx
        tx.start()
        return tx

    def send_ack(self, ack: Request, destination: Destination) -> bool:
        """
        Send an ACK for a 2xx (RFC 3261 §13.2.2.4: the UA core's job, outside
        any transaction), prepending a Via with a fresh branch when it has
        none.  Returns ``False`` on a transport error.
        """
        if "Via" not in ack.headers:
            self._add_via(ack, destination)
        return self.transmit_request(ack, destination)

    def _add_via(self, request: Request, destination: Destination) -> str:
        branch = new_branch()
        host, port = self.transport.local_address(destination.transport)
        via = Via(destination.transport, host, port, {"branch": branch, "rport": None})
        request.headers.push_via(via)  # (kept parsed: the transport reads it next)
        return branch

    # -- IMessageHandler ------------------------------------------------------

    def request_received(self, request: Request, source: object) -> None:
        """
        §17.2.3: match ``request`` to a server transaction; a retransmission
        is absorbed by its machine, a new request creates one and reaches
        the user.  Never raises.
        """
        method = request.method
        try:
            top_via = request.top_via
            key = server_key(request, top_via)
            reliable = is_reliable(top_via.transport)
        except ValueError as e:
            self._reject(request, source, f"Bad Request ({e})")
            return
        if method == "ACK":
            self._ack_received(request, key, source)
            return
        tx = self._servers.get(key)
        if tx is not None:
            # §17.2.3: a retransmission; its machine absorbs it (or re-sends its response).
            self.counts.requests_received += 1
            tx.receive_retransmission(request)
            return
        try:
            # §8.1.1: every request carries readable From, To, Call-ID and a
            # CSeq naming its method; the TU may rely on them.
            request.from_, request.to, request.call_id  # noqa: B018
            if request.cseq.method != method:
                raise ValueError("CSeq method does not match the request method")
        except ValueError as e:
            self._reject(request, source, f"Bad Request ({e})")
            return
        stateless = self.stateless
        if stateless is not None and method != "INVITE" and method != "CANCEL":
            try:
                response = stateless(request, source)
            except Exception:
                log.failure("stateless responder failed on {method}", method=method)
                response = None
            if response is not None:
                self.transmit_response(response, source)
                return
        if method == "INVITE":
            tx = InviteServerTransaction(
                self, request, source, top_via.branch or "", reliable, key, State.PROCEEDING
            )
        else:
            tx = NonInviteServerTransaction(
                self, request, source, top_via.branch or "", reliable, key, State.TRYING
            )
        self._servers[key] = tx
        tx.start()
        if method == "CANCEL":
            self._cancel_received(tx, key)
            return
        try:
            self.user.request_received(tx, request)
        except Exception:
            log.failure(
                "transaction user failed handling {method}",
                method=method,
                call_id=request.headers.get("Call-ID"),
            )
            if tx.last_status == 0 and not tx.is_terminated:
                tx.respond(make_response(request, 500, to_tag=new_tag()))

    def response_received(self, response: Response, source: object) -> None:
        """§17.1.3: pass ``response`` to its client transaction, else to the user."""
        try:
            key = response_key(response)
        except ValueError as e:
            log.info("dropping response with malformed headers: {error}", error=str(e))
            return
        tx = self._clients.get(key) if key is not None else None
        if tx is not None:
            tx.receive_response(response)
            return
        try:
            self.user.stray_response(response)
        except Exception:
            log.failure("transaction user failed handling a stray {status}", status=response.status)

    def request_failed(self, request: Request, destination: Destination, reason: str) -> None:
        """
        The transport could not deliver ``request`` after all (a connection
        refused): its client transaction, if still waiting, ends now with a
        local 503 (RFC 3261 §8.1.3.1, §17.1.4) instead of at Timer B/F.
        """
        try:
            branch = request.top_via.branch or ""
        except ValueError:
            return
        tx = self._clients.get(client_key(branch, request.method))
        log.info(
            "transport error sending {method}: {error}",
            method=request.method,
            error=reason,
            peer=str(destination),
            call_id=request.headers.get("Call-ID"),
        )
        if tx is not None:
            tx.transport_failed()

    def _ack_received(self, ack: Request, key: ServerKey, source: object) -> None:
        tx = self._servers.get(key)
        if tx is None and is_rfc2543(key):
            # RFC 3261 §17.2.3: an RFC 2543 ACK matches the INVITE by
            # everything but the To tag, which must be the response's.
            candidate = self._servers.get(with_to_tag(key, None))
            if isinstance(candidate, InviteServerTransaction) and candidate.last_status:
                if candidate.last_to_tag == ack.to.tag:
                    tx = candidate
        if isinstance(tx, InviteServerTransaction) and tx.receive_ack(ack):
            return
        try:
            self.user.ack_received(ack, source)
        except Exception:
            log.failure(
                "transaction user failed handling an ACK", call_id=ack.headers.get("Call-ID")
            )

    def _cancel_received(self, cancel_tx: ServerTransaction, key: ServerKey) -> None:
        """
        RFC 3261 §9.2: a CANCEL matching a pending INVITE gets 200 and the
        user is told (it answers the INVITE 487); one matching an INVITE that
        already has a final response gets 200 and has no effect; one
        matching nothing gets 481.
        """
        cancel = cancel_tx.request
        invite_tx = self._servers.get(with_method(key, "INVITE"))
        if not isinstance(invite_tx, InviteServerTransaction) or invite_tx.is_terminated:
            cancel_tx.respond(make_response(cancel, 481, to_tag=new_tag()))
            return
        # §9.2: the To tag of the 200 SHOULD equal the INVITE response's.
        to_tag = invite_tx.last_to_tag if invite_tx.last_status > 100 else None
        cancel_tx.respond(make_response(cancel, 200, to_tag=to_tag or new_tag()))
        if invite_tx.state is State.PROCEEDING:
            try:
                self.user.cancel_received(invite_tx)
            except Exception:
                log.failure("transaction user failed handling a CANCEL", call_id=cancel.call_id)

    def _reject(self, request: Request, source: object, reason: str) -> None:
        """Answer a request we cannot match 400, statelessly (never an ACK)."""
        log.info("rejecting {method}: {reason}", method=request.method, reason=reason)
        if request.method == "ACK":
            return
        try:
            response = make_response(request, 400, reason, to_tag=new_tag())
        except ValueError:
            return  # not even the headers a response needs: drop
        self.transmit_response(response, source)

    # -- TransactionHost -------------------------------------------------------

    def transmit_request(self, request: Request, destination: object) -> bool:
        """Hand ``request`` to the transport; ``False`` on a transport error."""
        try:
            self.transport.send_request(request, destination)  # type: ignore[arg-type]
        except (TransportError, OSError) as e:
            log.info(
                "transport error sending {method}: {error}",
                method=request.method,
                error=str(e),
                peer=str(destination),
            )
            return False
        return True

    def transmit_response(self, response: Response, source: object) -> bool:
        """Hand ``response`` to the transport; ``False`` on a transport error."""
        try:
            self.transport.send_response(response, source)
        except (TransportError, OSError) as e:
            log.info(
                "transport error sending {status}: {error}",
                status=response.status,
                error=str(e),
                peer=str(source),
            )
            return False
        return True

    def transaction_terminated(self, transaction: Transaction) -> None:
        """Forget a terminated transaction (filed under its ``key``)."""
        key = transaction.key
        if isinstance(transaction, ClientTransaction):
            if self._clients.get(key) is transaction:
                del self._clients[key]
        elif self._servers.get(key) is transaction:
            del self._servers[key]
