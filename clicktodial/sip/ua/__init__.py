"""
The user-agent core (RFC 3261 §8, §12-§15): the transaction user that turns
transactions into calls.

:class:`UserAgent` sits on a
:class:`~clicktodial.sip.transactions.TransactionLayer` as its :class:`ITransactionUser`.
It keeps the dialogs (:class:`~clicktodial.sip.dialog.Dialog`)
of the INVITE sessions it takes part in and:

* as a UAC, starts calls (:meth:`UserAgent.invite` -> :class:`OutgoingCall`), cancels
  them (§9.1), answers 401/407 challenges with credentials (§22.2), ACKs
  every 2xx — retransmissions and forks included — with the same ACK
  (§13.2.2.4), and BYEs the extra dialogs of a forked INVITE;
* as a UAS, hands new INVITEs to an :class:`IIncomingCallHandler` as
  :class:`IncomingCall`s, retransmits its 2xx until the ACK comes (§13.3.1.4) and
  ends the session with a BYE if it never does;
* inside dialogs, checks CSeq order (§12.2.2), answers requests for unknown
  dialogs with 481, detects merged requests (§8.2.2.2, 482), resolves
  re-INVITE glare (§14: 491 / 500, and the randomized retry of §14.1), and
  tracks the SDP offer/answer state (RFC 3264 via §13.2.1, §13.3.1, §14);
* hands every session event to the session's :class:`ISessionHandler`.

The application — the click-to-dial B2BUA — sees :class:`Session`s (one per
dialog), never transactions.  Everything timed uses the injected clock; when a
session ends nothing of it stays behind (:meth:`UserAgent.active_count`).

Modules: ``shared`` (typing Protocols, :class:`CallState`, exceptions), ``session``
(:class:`Session`, its 2xx retransmitter and re-INVITEs), ``uas`` (:class:`IncomingCall`,
:class:`IncomingRequest`), ``uac`` (:class:`OutgoingCall` and its transition table),
``handlers`` (:class:`SessionHandlerBase`), ``core`` (the :class:`UserAgent` dispatcher).
"""

from clicktodial.sip.ua.core import UserAgent, default_precheck
from clicktodial.sip.ua.handlers import SessionHandlerBase
from clicktodial.sip.ua.session import Session
from clicktodial.sip.ua.shared import (
    ALLOWED_METHODS,
    CallState,
    ClientTransactionLike,
    RequestPending,
    ServerTransactionLike,
    TransactionLayerLike,
)
from clicktodial.sip.ua.uac import OutgoingCall
from clicktodial.sip.ua.uas import IncomingCall, IncomingRequest

__all__ = [
    "ALLOWED_METHODS",
    "CallState",
    "ClientTransactionLike",
    "IncomingCall",
    "IncomingRequest",
    "OutgoingCall",
    "RequestPending",
    "ServerTransactionLike",
    "Session",
    "SessionHandlerBase",
    "TransactionLayerLike",
    "UserAgent",
    "default_precheck",
]
