"""
The SIP transaction layer (RFC 3261 §17, RFC 6026, RFC 4320): one module per state machine,
and their public names here. docs/transactions.md has their transition tables.

Use::

    layer = TransactionLayer(reactor, transport, ua_core, Timers())
    tx = layer.send_request(request, destination, on_response)
    # server side: ua_core.request_received(server_tx, request)
    #              -> server_tx.respond(make_response(request, 200, to_tag=...))
"""

from clicktodial.sip.transactions.base import (
    RELIABLE_TRANSPORTS,
    RequestReleased,
    State,
    Timers,
    TransactionCounts,
    is_reliable,
)
from clicktodial.sip.transactions.client import ClientTransaction, ResponseCallback
from clicktodial.sip.transactions.invite_client import InviteClientTransaction
from clicktodial.sip.transactions.invite_server import TRYING_DELAY, InviteServerTransaction
from clicktodial.sip.transactions.layer import TransactionLayer
from clicktodial.sip.transactions.matching import MAGIC_COOKIE, has_rfc3261_branch
from clicktodial.sip.transactions.noninvite_client import NonInviteClientTransaction
from clicktodial.sip.transactions.noninvite_server import NonInviteServerTransaction
from clicktodial.sip.transactions.server import FailureCallback, ServerTransaction

__all__ = [
    "MAGIC_COOKIE",
    "RELIABLE_TRANSPORTS",
    "TRYING_DELAY",
    "ClientTransaction",
    "FailureCallback",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "RequestReleased",
    "ResponseCallback",
    "ServerTransaction",
    "State",
    "Timers",
    "TransactionCounts",
    "TransactionLayer",
    "has_rfc3261_branch",
    "is_reliable",
]
