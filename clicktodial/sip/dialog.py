"""
SIP dialogs (RFC 3261 §12): the peer-to-peer state two user agents share
from the first dialog-creating response until a BYE.

A :class:`Dialog` holds the dialog state of §12.1 — ID, sequence numbers, local
and remote URIs, remote target, route set, secure flag — and builds the
requests sent inside it (§12.2.1.1) and the destination they go to.  It
never sends anything and never looks at the clock: the user-agent core
(:obj:`clicktodial.sip.ua`) drives it.

No Twisted imports here.
"""

from __future__ import annotations

import enum
import secrets
import sys
from collections.abc import Iterable, Sequence

import attrs

from clicktodial.sip.address import NO_RECONNECT, Destination, Source, default_port
from clicktodial.sip.headers import NameAddr, parse_name_addr
from clicktodial.sip.message import Request, Response
from clicktodial.sip.sdp import OfferAnswer
from clicktodial.sip.uri import URI
from clicktodial.sip.wirecache import BoundedCache

__all__ = [
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogError",
    "DialogID",
    "DialogState",
    "OutOfOrderRequest",
    "destination_for_uri",
    "flow_destination",
    "request_dialog_id",
    "response_dialog_id",
    "shared_destination",
    "source_flow",
]

#: Methods whose request and 2xx replace the remote target (RFC 3261 §12.2;
#: UPDATE by RFC 3311 §5.1, SUBSCRIBE/NOTIFY by RFC 6665 §4.1.2.1, REFER by
#: RFC 3515).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})

#: Header fields of a request that a strict router must not see in the
#: Request-URI (RFC 3261 §12.2.1.1: "parameters not allowed in a
#: Request-URI" are stripped from the first Route's URI).
_REQUEST_URI_FORBIDDEN_PARAMS = ("method", "ttl")

_DEFAULT_MAX_FORWARDS = "70"

#: The authorization header fields an ACK for a 2xx copies from its INVITE (RFC 3261
#: §13.2.2.4), by lookup key.
_AUTHORIZATION_NAMES = {
    "authorization": "Authorization",
    "proxy-authorization": "Proxy-Authorization",
}


class DialogState(enum.StrEnum):
    """Dialog states as RFC 3261 §12 names them."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogError(Exception):
    """A message cannot create or update a dialog (missing tags, Contact...)."""


class OutOfOrderRequest(DialogError):
    """
    An in-dialog request has a CSeq lower than the remote sequence number:
    RFC 3261 §12.2.2 says to reject it with a 500.
    """


@attrs.frozen
class DialogID:
    """
    The dialog ID (RFC 3261 §12): Call-ID, local tag and remote tag, as seen
    by this user agent.  ``remote_tag`` is None only for an RFC 2543 peer
    that sent no From tag.
    """

    call_id: str
    local_tag: str
    remote_tag: str | None


def request_dialog_id(request: Request) -> DialogID | None:
    """
    The ID of the dialog a received request belongs to, from the UAS's
    point of view (local tag in To, remote tag in From), or None if the
    request has no To tag (it is not inside a dialog).
    """
    # (The tags read from the parameters, not through NameAddr.tag: a call less each.)
    local_tag = request.to.params.get("tag")
    if local_tag is None:
        return None
    return DialogID(request.call_id, local_tag, request.from_.params.get("tag"))


def response_dialog_id(response: Response) -> DialogID | None:
    """
    The ID of the dialog a received response belongs to, from the UAC's
    point of view (local tag in From, remote tag in To), or None if the
    response has no From tag (we always send one) or no To tag.
    """
    local_tag = response.from_.params.get("tag")
    remote_tag = response.to.params.get("tag")
    if local_tag is None or remote_tag is None:
        return None
    return DialogID(response.call_id, local_tag, remote_tag)


def destination_for_uri(uri: URI) -> Destination:
    """
    Where to send a request whose next hop is ``uri`` (RFC 3263 §4 without
    DNS: ``maddr`` or host, the port or the transport's default, the
    ``transport`` parameter or UDP — TLS for a SIPS URI).  Host names are
    left for the transport to resolve.
    """
    secure = uri.scheme == "sips"
    transport_param = uri.param("transport")
    if transport_param:
        transport = transport_param.upper()
    else:
        transport = "TLS" if secure else "UDP"
    if secure and transport == "TCP":
        transport = "TLS"
    host = uri.param("maddr") or uri.host
    default_port = 5061 if transport in ("TLS", "WSS") else 5060
    return Destination(transport, host, uri.port or default_port)


def flow_destination(received: URI, contact: URI, outbound: bool) -> Destination:
    """
    Where to send requests to a phone that registered ``contact`` from ``received`` (its
    REGISTER's source as a URI: host, port and transport).  Over UDP, that address.  Over
    TCP/TLS, the connection it registered over while it is open; once it is gone, a new
    connection to the same host at the Contact's port, where the phone listens (RFC 3261
    §18.1.1; the source port of its connection was ephemeral) -- never a host the Contact
    names (docs/sip-transport.md).  An RFC 5626 flow (``outbound``: the binding has
    ``+sip.instance`` and ``reg-id``) is never re-opened (§5.3: 430 Flow Failed semantics).
    """
    flow = destination_for_uri(received)
    if flow.transport not in ("TCP", "TLS"):
        return flow
    if outbound:
        reconnect = NO_RECONNECT
    else:
        reconnect = contact.port or (5061 if flow.transport == "TLS" else 5060)
    return attrs.evolve(flow, reconnect_port=reconnect)


def source_flow(source: Source, contact: URI) -> Destination:
    """
    Where requests go in a dialog a peer set up with a request from ``source`` whose
    Contact is ``contact``: back to that source (its connection while it is open), never to
    a host the Contact or a Record-Route names (docs/security.md).  A stream connection that
    is gone is reopened to the source host at the Contact's port, as for a binding
    (:func:`flow_destination`).
    """
    flow = source.reply_destination()
    if flow.transport not in ("TCP", "TLS"):
        return flow
    return attrs.evolve(flow, reconnect_port=contact.port or default_port(flow.transport))


def _party(name_addr: NameAddr, tag: str | None) -> NameAddr:
    """A From/To value holding only what a dialog keeps: URI, display name, tag."""
    params: dict[str, str | None] = {} if tag is None else {"tag": tag}
    return NameAddr(name_addr.uri, name_addr.display_name, params)


def _with_tag(text: str, tag: str | None) -> str:
    return text if tag is None else f"{text};tag={tag}"


#: Remote targets and flows of the dialogs, one object per distinct value: a phone's
#: Contact and the address it registered from are the same for each of its calls, and a
#: held call would otherwise keep its own parsed copy.  Both are immutable; the tables are
#: bounded wire caches (emptied when full: they only share, they never decide).
_SHARED_URIS: BoundedCache[str, URI] = BoundedCache("dialog remote targets", 4096)
_SHARED_FLOWS: BoundedCache[Destination, Destination] = BoundedCache("dialog flows", 4096)


def _shared_uri(uri: URI) -> URI:
    """The shared :class:`URI` of the same text as ``uri`` (exactly: not RFC equality)."""
    text = uri.text
    kept = _SHARED_URIS.entries.get(text)
    return kept if kept is not None else _SHARED_URIS.remember(text, uri)


def shared_destination(flow: Destination) -> Destination:
    """
    The shared :class:`Destination` equal to ``flow`` (a frozen value): one object per
    phone for its dialogs, and for the INVITEs to it (an answered one keeps its
    destination for 64*T1, a call rate R times 32 s of them).
    """
    kept = _SHARED_FLOWS.entries.get(flow)
    return kept if kept is not None else _SHARED_FLOWS.remember(flow, flow)


def _first_contact(message: Request | Response) -> URI | None:
    contacts = message.contacts
    return contacts[0].uri if contacts else None


def _arrived_secure(request: Request) -> bool:
    # RFC 3261 §12.1.1/§12.1.2: secure if the request was sent over TLS
    # with a SIPS Request-URI.
    return request.uri.scheme == "sips" and request.top_via.transport.upper() == "TLS"


class Dialog(OfferAnswer):
    """
    One dialog's state (RFC 3261 §12.1) and its request builder (§12.2.1.1).

    :ivar state: a :class:`DialogState`.
    :ivar call_id: the Call-ID.
    :ivar local_party: our From (UAC) / To (UAS) value: URI, display name,
        local tag.
    :ivar remote_party: the peer's value with the remote tag.
    :ivar local_seq: the last CSeq number we used (None until we send).
    :ivar remote_seq: the highest CSeq number received (None until we
        receive a request).
    :ivar remote_target: where requests go (the peer's Contact).
    :ivar route_set: the Route values for our requests, in the order they
        are sent.
    :ivar secure: whether the dialog was set up over TLS with SIPS.
    :ivar local_contact: the Contact URI we put in target-refresh messages.
    :ivar is_uac: whether we sent the dialog-creating request.
    :ivar offer_answer: the dialog's SDP offer/answer state: the dialog itself, an
        :class:`OfferAnswer` (its four slots in the dialog object; a separate object
        cost 40 bytes more per dialog, two per held call).
    """

    # One per dialog, for as long as a call is held: no per-instance __dict__.
    # The parties are kept as their header text without the tag (one string shared by
    # every call of the user or peer) and the tags, parsed again only when asked for (the
    # From/To of in-dialog requests are that text): a parsed NameAddr with its URI and
    # parameters costs ~0.7 KB more per party, twice per leg of a held call.  The remote
    # target and the flow are shared with the other dialogs of the same phone.
    __slots__ = (
        "call_id",
        "_local_party",
        "_remote_party",
        "_local_tag",
        "_remote_tag",
        "_remote_target",
        "route_set",
        "local_contact",
        "local_seq",
        "remote_seq",
        "secure",
        "is_uac",
        "state",
        "_flow",
    )

    def __init__(
        self,
        *,
        call_id: str,
        local_party: NameAddr,
        remote_party: NameAddr,
        remote_target: URI,
        route_set: Sequence[NameAddr],
        local_contact: URI,
        local_seq: int | None,
        remote_seq: int | None,
        secure: bool = False,
        is_uac: bool,
        state: DialogState = DialogState.EARLY,
    ) -> None:
        # (The tags read from the parameters, not through NameAddr.tag: a call less each.)
        local_tag = local_party.params.get("tag")
        if local_tag is None:
            raise DialogError("a dialog needs a local tag")
        self.call_id = call_id
        # Each party's header text without its parameters (URI and display name), one shared
        # string per distinct value: every call of a user (and every call to the same peer)
        # keeps the same text; the tag is kept apart.
        self._local_party = sys.intern(local_party.serialize(False))
        self._local_tag: str = local_tag
        self._remote_party = sys.intern(remote_party.serialize(False))
        self._remote_tag = remote_party.params.get("tag")
        self._remote_target = _shared_uri(remote_target)
        # A tuple: the empty route set of most dialogs is one shared object.
        self.route_set: tuple[NameAddr, ...] = tuple(route_set)
        self.local_contact = local_contact
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.secure = secure
        self.is_uac = is_uac
        self.state = state
        OfferAnswer.__init__(self)
        self._flow: Destination | None = None

    def __repr__(self) -> str:
        return (
            f"<Dialog {self.state.value} {'UAC' if self.is_uac else 'UAS'} "
            f"call_id={self.call_id!r} local={self.local_tag!r} remote={self.remote_tag!r}>"
        )

    @property
    def offer_answer(self) -> OfferAnswer:
        """The dialog's offer/answer state (RFC 3264 §4 as RFC 3261 §13 uses it)."""
        return self

    # -- creation ------------------------------------------------------------

    @classmethod
    def from_uac(cls, request: Request, response: Response, local_contact: URI) -> Dialog:
        """
        The dialog a UAC creates from a 101-199 or 2xx response with a To
        tag to its ``request`` (RFC 3261 §12.1.2).

        :raises DialogError: if the response cannot create a dialog.
        """
        if not 101 <= response.status <= 299:
            raise DialogError(f"a {response.status} response does not create a dialog")
        remote_tag = response.to.params.get("tag")
        if remote_tag is None:
            raise DialogError("a dialog-creating response needs a To tag")
        # A 1xx may lack a Contact (RFC 3261 §12.1.2: then the remote target
        # is filled in by a later response); keep the Request-URI meanwhile.
        target = _first_contact(response) or request.uri
        return cls(
            call_id=request.call_id,
            local_party=request.from_,  # (the dialog keeps its text without parameters, and tag)
            remote_party=_party(request.to, remote_tag),
            remote_target=target,
            # §12.1.2: the route set is the Record-Route list in reverse.
            route_set=list(reversed(response.record_routes)),
            local_contact=local_contact,
            local_seq=request.cseq.seq,
            remote_seq=None,
            secure=_arrived_secure(request),
            is_uac=True,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
        )

    @classmethod
    def from_uas(
        cls,
        request: Request,
        local_tag: str,
        local_contact: URI,
        state: DialogState = DialogState.EARLY,
    ) -> Dialog:
        """
        The dialog a UAS creates when it answers ``request`` with a 101-299
        carrying ``local_tag`` in To (RFC 3261 §12.1.1).

        :raises DialogError: if the request has no Contact.
        """
        target = _first_contact(request)
        if target is None:
            raise DialogError("a dialog-creating request needs a Contact")
        return cls(
            call_id=request.call_id,
            local_party=_party(request.to, local_tag),
            remote_party=request.from_,
            remote_target=target,
            # §12.1.1: the route set is the Record-Route list in order.
            route_set=request.record_routes,
            local_contact=local_contact,
            local_seq=None,
            remote_seq=request.cseq.seq,
            secure=_arrived_secure(request),
            is_uac=False,
            state=state,
        )

    # -- identity ------------------------------------------------------------

    @property
    def local_party(self) -> NameAddr:
        """Our From (UAC) / To (UAS) value: URI, display name, local tag (a new parse)."""
        return parse_name_addr(_with_tag(self._local_party, self._local_tag))

    @property
    def remote_party(self) -> NameAddr:
        """The peer's From/To value with the remote tag (a new parse)."""
        return parse_name_addr(_with_tag(self._remote_party, self._remote_tag))

    @property
    def remote_target(self) -> URI:
        """Where requests go: the peer's Contact (RFC 3261 §12.1)."""
        return self._remote_target

    @remote_target.setter
    def remote_target(self, uri: URI) -> None:
        self._remote_target = _shared_uri(uri)

    @property
    def flow(self) -> Destination | None:
        """
        Where requests (and ACKs) go regardless of route set and remote target: the flow
        the dialog was set up over (a phone: the address its REGISTER came from, or a
        trusted proxy; docs/security.md), so that a peer's Contact or Record-Route steers
        nothing; None for RFC 3261 §12.2.1.1 as usual.
        """
        return self._flow

    @flow.setter
    def flow(self, flow: Destination | None) -> None:
        self._flow = None if flow is None else shared_destination(flow)

    @property
    def local_tag(self) -> str:
        """Our tag."""
        return self._local_tag

    @property
    def remote_tag(self) -> str | None:
        """The peer's tag."""
        return self._remote_tag

    @property
    def id(self) -> DialogID:
        """The dialog ID (RFC 3261 §12)."""
        return DialogID(self.call_id, self._local_tag, self._remote_tag)

    @property
    def local_uri(self) -> URI:
        """The local URI (§12.1: From of our requests)."""
        return self.local_party.uri

    @property
    def remote_uri(self) -> URI:
        """The remote URI (§12.1: To of our requests)."""
        return self.remote_party.uri

    # -- state changes -------------------------------------------------------

    def confirm(self, response: Response) -> None:
        """
        A 2xx to the dialog-creating INVITE arrived for an early dialog
        (RFC 3261 §13.2.2.4): confirm it and recompute the route set
        (§12.2.1.2) and remote target from the 2xx.
        """
        if self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED
            if self.is_uac:
                self.route_set = tuple(reversed(response.record_routes))
        self.refresh_target(response)

    def terminate(self) -> None:
        """The dialog is over (BYE, failure of the INVITE, timeout)."""
        self.state = DialogState.TERMINATED

    def refresh_target(self, message: Request | Response) -> None:
        """A target refresh (§12.2): the remote target becomes ``message``'s Contact."""
        contact = _first_contact(message)
        if contact is not None:
            self._remote_target = _shared_uri(contact)  # (the setter's work, inline)

    def receive_request(self, request: Request) -> None:
        """
        Update the dialog for a request received inside it (RFC 3261
        §12.2.2): check and record the CSeq, refresh the remote target.
        ACK and CANCEL carry an earlier request's number and change nothing.

        :raises OutOfOrderRequest: when the CSeq is lower than the remote
            sequence number (answer 500).
        """
        if request.method in ("ACK", "CANCEL"):
            return
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            raise OutOfOrderRequest(f"CSeq {seq} is lower than {self.remote_seq}")
        self.remote_seq = seq
        if request.method in TARGET_REFRESH_METHODS:
            self.refresh_target(request)

    def receive_response(self, method: str, response: Response) -> None:
        """
        Update the dialog for a response to a request we sent inside it
        (RFC 3261 §12.2.1.2): a 2xx to a target-refresh request replaces
        the remote target.
        """
        if 200 <= response.status < 300 and method in TARGET_REFRESH_METHODS:
            if method == "INVITE" and self.state is DialogState.EARLY:
                self.confirm(response)
            else:
                self.refresh_target(response)

    # -- requests ------------------------------------------------------------

    def next_local_seq(self) -> int:
        """Increment and return the local sequence number (RFC 3261 §12.2.1.1)."""
        if self.local_seq is None:
            # §12.2.1.1: a UAS that has not sent yet picks an initial value;
            # any value below 2**31 works, a random one avoids collisions
            # after a restart.
            self.local_seq = secrets.randbelow(2**16) + 1
        else:
            self.local_seq += 1
        return self.local_seq

    def _request_uri_and_routes(self) -> tuple[URI, list[str]]:
        """Request-URI and Route values per RFC 3261 §12.2.1.1."""
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0].uri
        if first.has_param("lr"):
            # Loose routing: Request-URI is the remote target, Route is the
            # route set as is.
            return self.remote_target, [str(route) for route in self.route_set]
        # Strict routing: the first route becomes the Request-URI (without
        # parameters not allowed there), the remote target goes last.
        uri = first.without_params(*_REQUEST_URI_FORBIDDEN_PARAMS).without_headers()
        routes = [str(route) for route in self.route_set[1:]]
        routes.append(f"<{self._remote_target.text}>")
        return uri, routes

    def _build(
        self,
        method: str,
        seq: int,
        body: bytes,
        content_type: str | None,
        extra_headers: Iterable[tuple[str, str]],
    ) -> Request:
        headers: list[tuple[str, str]] = [("Max-Forwards", _DEFAULT_MAX_FORWARDS)]
        if self.route_set:
            uri, routes = self._request_uri_and_routes()
            for route in routes:
                headers.append(("Route", route))
        else:
            uri = self._remote_target  # (the usual case, read inline)
        # (_with_tag and CSeq.serialize written out: a dialog builds every request it sends.)
        remote_tag = self._remote_tag
        headers += [
            ("From", f"{self._local_party};tag={self._local_tag}"),
            (
                "To",
                self._remote_party
                if remote_tag is None
                else f"{self._remote_party};tag={remote_tag}",
            ),
            ("Call-ID", self.call_id),
            ("CSeq", f"{seq} {method}"),
        ]
        if method in TARGET_REFRESH_METHODS:
            headers.append(("Contact", f"<{self.local_contact.text}>"))
        headers.extend(extra_headers)
        if body:
            headers.append(("Content-Type", content_type or "application/sdp"))
        return Request(method, uri, headers, body)

    def create_request(
        self,
        method: str,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """
        A new request inside this dialog (RFC 3261 §12.2.1.1) with the next
        local CSeq: BYE, re-INVITE, INFO, UPDATE, ...  The Via is left to
        the transaction layer.  Target-refresh requests carry our Contact.

        :raises ValueError: for ACK and CANCEL, which reuse an earlier
            request's CSeq (use :func:`create_ack`; CANCEL comes from the client
            transaction).
        """
        if method in ("ACK", "CANCEL"):
            raise ValueError(f"{method} is not built with create_request")
        if self.state is DialogState.TERMINATED and method != "BYE":
            # The BYE is what ends a dialog: it is built once we consider
            # the dialog over.
            raise DialogError("the dialog is terminated")
        return self._build(method, self.next_local_seq(), body, content_type, headers)

    def create_ack(
        self,
        invite: Request,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """
        The ACK for a 2xx to ``invite`` (RFC 3261 §13.2.2.4): built like any
        in-dialog request, with the INVITE's CSeq number and its
        authorization header fields.
        """
        keys, values = invite.headers.keyed_values()
        auth = []
        if "authorization" in keys or "proxy-authorization" in keys:  # (usually neither)
            for key, value in zip(keys, values, strict=True):
                name = _AUTHORIZATION_NAMES.get(key)
                if name is not None:
                    auth.append((name, value.strip(" \t")))
        return self._build("ACK", invite.cseq.seq, body, content_type, auth)

    def destination(self) -> Destination:
        """
        Where requests inside this dialog go: its :func:`flow` when pinned;
        otherwise the first route's URI if there is a route set, else the
        remote target (RFC 3261 §12.2.1.1 with §8.1.2).
        """
        if self._flow is not None:
            return self._flow
        if self.route_set:
            return destination_for_uri(self.route_set[0].uri)
        return destination_for_uri(self._remote_target)
