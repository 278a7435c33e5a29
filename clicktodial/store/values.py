"""
Plain values that cross the store interfaces.

Stores take and return these frozen attrs classes, never database rows, so
a value can be handed from a database thread to the reactor thread and kept
as long as the caller likes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from operator import attrgetter
from typing import NamedTuple, TypedDict

from attrs import field, fields, frozen, validators

#: Usernames double as SIP user parts (RFC 3261 §25.1 ``unreserved``
#: characters only, so no escaping is ever needed) and are lower case only.
USERNAME_PATTERN = re.compile(r"[a-z0-9._-]{1,64}")


def is_valid_username(username: str) -> bool:
    """Tell whether ``username`` matches :class:`USERNAME_PATTERN`."""
    return USERNAME_PATTERN.fullmatch(username) is not None


def validate_username(username: str) -> str:
    """
    Return ``username`` unchanged if it is valid.

    :raises clicktodial.store.errors.InvalidUsername: if it is not.
    """
    from clicktodial.store.errors import InvalidUsername

    if not is_valid_username(username):
        raise InvalidUsername(username)
    return username


def user_aor(username: str, domain: str) -> str:
    """
    The address-of-record of a user: ``sip:username@domain``.

    The domain is lower-cased: RFC 3261 §19.1.4 compares hosts
    case-insensitively, and the AOR is a lookup key.
    """
    return f"sip:{username}@{domain.lower()}"


def aor_user_part(aor: str) -> str:
    """
    The user part of an AOR written as ``sip:user@host`` (or ``sips:``); an
    AOR without ``@`` is returned without its scheme.
    """
    for scheme in ("sip:", "sips:"):
        if aor.lower().startswith(scheme):
            aor = aor[len(scheme) :]
            break
    return aor.split("@", 1)[0]


# -- users ------------------------------------------------------------------


@frozen
class User:
    """
    A user account as the rest of the daemon sees it: no secrets.

    :ivar has_password: whether a web password is set; a user without one
        cannot log in to the web interface until one is set.
    :ivar has_sip_credentials: whether SIP digest HA1s are set; a user
        without them cannot register a phone.
    :ivar created_at: POSIX time the account was created.
    """

    username: str
    display_name: str = ""
    is_admin: bool = False
    disabled: bool = False
    has_password: bool = False
    has_sip_credentials: bool = False
    created_at: float = 0.0


@frozen
class NewUser:
    """
    A user to be created, with plaintext secrets (hashed by the store; the
    plaintext is never stored). ``None`` means "no such secret".
    """

    username: str
    password: str | None = field(default=None, repr=False)
    sip_password: str | None = field(default=None, repr=False)
    display_name: str = ""
    is_admin: bool = False


@frozen
class UserChanges:
    """
    Changes to a user; every field left at ``None`` (or ``False`` for
    ``clear_password``) is left unchanged.

    :ivar password: a new plaintext web password, hashed with Argon2id.
    :ivar clear_password: remove the web password: the user can no longer
        log in to the web interface.
    :ivar sip_password: a new plaintext SIP secret, stored as HA1s only.
    """

    display_name: str | None = None
    password: str | None = field(default=None, repr=False)
    clear_password: bool = False
    sip_password: str | None = field(default=None, repr=False)
    disabled: bool | None = None
    is_admin: bool | None = None

    def __attrs_post_init__(self) -> None:
        if self.clear_password and self.password is not None:
            raise ValueError("cannot both set and clear the web password")


class SipCredentials(NamedTuple):
    """
    The SIP digest secrets of one user (RFC 2617 / RFC 8760): ``HA1 =
    H(username ":" realm ":" password)`` in lower-case hex, with MD5 and with
    SHA-256, for the store's realm.
    """

    ha1_md5: str
    ha1_sha256: str


@frozen
class ApiToken:
    """
    An API token's public description (the token itself is shown once, at
    creation, and stored only as a SHA-256 digest).

    :ivar token_id: a short public identifier: the first 16 hex digits of
        the token's SHA-256, enough to name it for revocation.
    """

    token_id: str
    username: str
    label: str = ""
    created_at: float = 0.0


# -- registrations (RFC 3261 §10.3) -------------------------------------------


def _tuple_of_str(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        # A lone string would become a tuple of characters.
        raise TypeError("expected a sequence of strings, not a string")
    return tuple(value)


@frozen
class Binding:
    """
    One registered contact of an address-of-record.

    :ivar contact: the Contact URI exactly as the UA sent it (with any URI
        headers such as ``?Route=...``), without the header field parameters.
    :ivar q: the ``q`` parameter (RFC 3261 §10.2.1.2), or ``None`` if absent.
    :ivar expires_at: POSIX time the binding expires.
    :ivar call_id: Call-ID of the REGISTER that last refreshed it.
    :ivar cseq: CSeq number of that REGISTER.
    :ivar instance_id: the ``+sip.instance`` value (RFC 5626 / RFC 5627).
    :ivar reg_id: the ``reg-id`` value (RFC 5626 §4.2).
    :ivar path: Path header field values of the REGISTER (RFC 3327), in
        order.
    :ivar received: the address the REGISTER came from (for NAT traversal),
        in whatever text form the registrar chooses.
    :ivar user_agent: the User-Agent of the registering UA.
    """

    aor: str
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    q: float | None = None
    instance_id: str | None = None
    reg_id: int | None = None
    path: tuple[str, ...] = field(default=(), converter=_tuple_of_str)
    received: str | None = None
    user_agent: str | None = None

    def expires_in(self, now: float) -> int:
        """Whole seconds left at ``now`` (for the Contact ``expires`` param)."""
        return max(0, int(self.expires_at - now + 0.5))


@frozen
class ContactChange:
    """
    One Contact of a REGISTER request.

    :ivar contact: the Contact URI, verbatim.
    :ivar expires: seconds the binding should last, already bounded by the
        registrar; 0 removes the binding (RFC 3261 §10.3 step 7).
    :ivar key: the value bindings are matched on; the registrar passes a
        canonical form of the URI (RFC 3261 §19.1.4 URI equality). Defaults
        to the verbatim URI. Ignored when ``instance_id`` and ``reg_id`` are
        both set: RFC 5626 §6 matches those bindings by instance and reg-id.
    """

    contact: str
    expires: int = field(validator=validators.ge(0))
    q: float | None = None
    instance_id: str | None = None
    reg_id: int | None = None
    key: str | None = None

    def binding_key(self) -> str:
        """The key that identifies the binding this contact updates."""
        if self.instance_id is not None and self.reg_id is not None:
            return f"outbound:{self.instance_id}#{self.reg_id}"
        return "uri:" + (self.key if self.key is not None else self.contact)


def _tuple_of_contacts(value: Iterable[ContactChange]) -> tuple[ContactChange, ...]:
    return tuple(value)


@frozen
class BindingChanges:
    """
    Everything one REGISTER asks of the location service.

    :ivar wildcard: ``Contact: *`` with ``Expires: 0``: remove every binding
        of the AOR (RFC 3261 §10.3 step 6); ``contacts`` must then be empty.
    :ivar path: Path header values, stored with every binding added or
        refreshed by this request.
    :ivar max_bindings: the most unexpired bindings the AOR may have once a request that
        adds one is applied (the registrar's ``max_contacts``), or ``None`` for no limit.
        A request that would add a binding beyond it fails with
        :class:`~clicktodial.store.errors.TooManyBindings` and changes nothing; refreshes
        and removals always pass. The store checks it inside the write that applies the
        request, so concurrent REGISTERs (other Call-IDs, other daemons) cannot exceed it.
    """

    call_id: str
    cseq: int
    contacts: tuple[ContactChange, ...] = field(default=(), converter=_tuple_of_contacts)
    wildcard: bool = False
    path: tuple[str, ...] = field(default=(), converter=_tuple_of_str)
    received: str | None = None
    user_agent: str | None = None
    max_bindings: int | None = field(default=None, validator=validators.optional(validators.ge(1)))

    def __attrs_post_init__(self) -> None:
        if self.wildcard and self.contacts:
            # RFC 3261 §10.3 step 6: "*" must be the only Contact.
            raise ValueError("a wildcard REGISTER carries no other contact")


class VerifiedUpdate(NamedTuple):
    """
    What a registration in one store batch found and did
    (:meth:`clicktodial.interfaces.IVerifiedRegistration.update_bindings_if_verified`).

    :ivar credentials: the user's SIP credentials as read (``None``: unknown or disabled).
    :ivar bindings: the AOR's unexpired bindings after the update, or ``None`` when the
        verification refused the credentials and nothing was written.
    """

    credentials: SipCredentials | None
    bindings: list[Binding] | None


# -- call records ---------------------------------------------------------------

#: Documented values of :func:`CallRecord.end_reason`.
END_REASONS = frozenset(
    {
        "caller-hangup",  # the caller hung up after the call was set up
        "callee-hangup",  # the callee hung up after answering
        "caller-no-answer",  # the caller's phone rang out without answer
        "caller-rejected",  # the caller declined the call on their phone
        "caller-busy",  # the caller's phone answered 486/600
        "caller-unreachable",  # no binding / no response from the caller's phone
        "callee-no-answer",  # the callee's phone rang out
        "callee-busy",  # the callee answered 486 Busy Here / 600
        "callee-rejected",  # the callee declined (603 Decline and the like)
        "callee-unreachable",  # no binding / no response from the callee
        "cancelled",  # the caller cancelled from the web page
        "max-duration",  # the configured maximum call duration ran out
        "timeout",  # a SIP transaction or session timer ran out
        "error",  # an internal or protocol error ended the call
        "lost",  # the node running the call stopped mid-call
        "media-relay-failed",  # the media relay refused or did not answer ([media:rtpengine])
        "refused",  # the dial plan refused the number (CallRecord.refusal says why)
        "no-trunk",  # none of the routed trunks exists or can take the call
    }
)

#: Documented values of :func:`CallRecord.who_hung_up`.
HANGUP_PARTIES = frozenset({"caller", "callee", "system"})

#: The states a call shows to the outside, in the order a call goes through them; it ends
#: in one of :data:`FINAL_STATES` (:func:`final_state`).
PUBLIC_STATES = ("calling-caller", "calling-callee", "connected", "ended", "failed")

#: The states of a call that is over.
FINAL_STATES = frozenset({"ended", "failed"})


def final_state(connected_at: float | None) -> str:
    """How a call that is over shows: ``ended`` if it was ever connected, else ``failed``
    (both phones may have answered and the offer/answer between them still failed)."""
    return "ended" if connected_at is not None else "failed"


@frozen
class CallRecord:
    """
    One click-to-dial call, as the store keeps it: its history.

    The live call is :class:`~clicktodial.calls.values.CallInfo`, which the controller
    publishes at every change; the two stay two values because they are not the same
    thing: a record is written three times a call (docs/design.md, "Placing a call without
    waiting on the database") and carries what only the store needs (``node``, the
    controller's state name, ``callee_rung_at``), while the live value carries what is
    never stored (``media_relay``) and the state the public sees. Everything derived from
    a record goes through :meth:`~clicktodial.calls.values.CallInfo.from_record` and
    :attr:`public_state`; the ended/failed decision is :func:`final_state`.

    :ivar call_id: the record id: a UUID4 in hex (not a SIP Call-ID).
    :ivar state: the call controller's state name when last updated.
    :ivar node: the daemon instance that runs the call, when several share a
        database.
    :ivar connected_at: when both phones had each other's media (the call was
        connected); ``None`` for a call that never was, even if both phones answered
        (the offer/answer between them can still fail).
    :ivar end_reason: one of :class:`END_REASONS`, once the call ended.
    :ivar sip_status: the final SIP status that ended the call, if any.
    :ivar who_hung_up: one of :class:`HANGUP_PARTIES`.
    :ivar number: a call to a telephone number: the number in E.164 (``+442079460958``;
        also its ``callee``); ``None`` for a call between directory users.
    :ivar destination_class: the dial plan's class of ``number`` (``national``, ...).
    :ivar trunk: the trunk the call went out through, once one took it.
    :ivar refusal: why the dial plan refused the call (end reason ``refused``), in words.
    """

    call_id: str
    caller: str
    callee: str
    created_at: float
    state: str = "new"
    node: str | None = None
    caller_answered_at: float | None = None
    callee_rung_at: float | None = None
    callee_answered_at: float | None = None
    connected_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    sip_status: int | None = None
    who_hung_up: str | None = None
    number: str | None = None
    destination_class: str | None = None
    trunk: str | None = None
    refusal: str | None = None

    @property
    def active(self) -> bool:
        """A call is active until it has an ``ended_at``."""
        return self.ended_at is None

    @property
    def public_state(self) -> str:
        """
        The state shown outside (``calling-caller``, ``calling-callee``, ``connected``,
        ``ended``: it was connected, ``failed``: it never was), from the times recorded
        (:attr:`state` holds the controller's own names).
        """
        if self.ended_at is not None:
            return final_state(self.connected_at)
        if self.connected_at is not None:
            return "connected"
        if self.callee_rung_at is not None:
            return "calling-callee"
        return "calling-caller"


@frozen
class CallUpdate:
    """
    Changes to a call record; fields left at ``None`` are unchanged (none of
    them ever needs to go back to "unset").
    """

    state: str | None = None
    caller_answered_at: float | None = None
    callee_rung_at: float | None = None
    callee_answered_at: float | None = None
    connected_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    sip_status: int | None = None
    who_hung_up: str | None = None
    number: str | None = None
    destination_class: str | None = None
    trunk: str | None = None
    refusal: str | None = None

    def __attrs_post_init__(self) -> None:
        # end_reason and who_hung_up only take their documented values: checked in one
        # call (attrs' optional(in_()) validators are two calls a field).
        if self.end_reason is not None and self.end_reason not in END_REASONS:
            raise ValueError(f"end_reason must be one of END_REASONS (got {self.end_reason!r})")
        if self.who_hung_up is not None and self.who_hung_up not in HANGUP_PARTIES:
            raise ValueError(
                f"who_hung_up must be one of HANGUP_PARTIES (got {self.who_hung_up!r})"
            )

    def changed_fields(self) -> dict[str, object]:
        """The fields this update sets, by name."""
        # Plain values only: no attrs.asdict (a Python call per field), one pass.
        values = _call_update_values(self)
        return {k: v for k, v in zip(_CALL_UPDATE_FIELDS, values, strict=True) if v is not None}


_CALL_UPDATE_FIELDS = tuple(a.name for a in fields(CallUpdate))
_call_update_values = attrgetter(*_CALL_UPDATE_FIELDS)


class CallChanges(TypedDict, total=False):
    """
    The fields of a :class:`CallUpdate` as a plain dict (only those set): what a call
    reports at each step, merged until the record is written (one :class:`CallUpdate`,
    validated, per write: ``CallUpdate(**changes)``).
    """

    state: str
    caller_answered_at: float
    callee_rung_at: float
    callee_answered_at: float
    connected_at: float
    ended_at: float
    end_reason: str
    sip_status: int
    who_hung_up: str
    number: str
    destination_class: str
    trunk: str
    refusal: str


# -- Call traces (ICallTraceStore; clicktodial.store.traces has the bound rule) ----

#: ``in``: received by the daemon; ``out``: sent by it.
DIRECTIONS = ("in", "out")


class TracedMessage(NamedTuple):
    """
    One SIP message of a call as it passed the daemon's transport: a named tuple (one is
    made for every message of a traced call, on the reactor thread: it costs little and
    packs as it is).

    :ivar at_ms: when, in milliseconds of the daemon's clock (POSIX time).
    :ivar direction: ``in`` (received) or ``out`` (sent): :data:`DIRECTIONS`.
    :ivar leg: ``caller`` or ``callee``: whose phone is the peer.
    :ivar sip_call_id: the Call-ID of the leg's dialog.
    :ivar retransmission: the same octets already passed this way in this call.
    :ivar data: the message's octets, ``Authorization``/``Proxy-Authorization`` values
        redacted.
    """

    at_ms: int
    direction: str
    transport: str
    local_host: str
    local_port: int
    remote_host: str
    remote_port: int
    leg: str
    sip_call_id: str
    retransmission: bool
    data: bytes


@frozen
class TraceLimits:
    """The bounds of one call's trace (``[calls] trace_max_messages``, ``trace_max_kb``)."""

    max_messages: int = 200
    max_bytes: int = 128 * 1024


@frozen
class TraceAppend:
    """
    New messages of one call, and how many more were dropped before they reached the store
    (the recorder applies the same bounds to what it buffers).
    """

    call_id: str
    messages: tuple[TracedMessage, ...]
    dropped: int = 0


@frozen
class CallTrace:
    """A call's trace: its messages in the order they passed, and how many were dropped."""

    call_id: str
    messages: tuple[TracedMessage, ...]
    dropped: int = 0
