"""
The registrar: a transaction user that answers REGISTER requests
(RFC 3261 §10.3) for our domain, with Digest authentication (RFC 3261 §22,
RFC 8760), RFC 3327 Path and RFC 5626 instance/reg-id bindings.

The UA core hands every REGISTER server transaction's request to
:meth:`Registrar.handle_register`, which fires with the final response; the
registrar never touches the transaction layer itself.

Order of the checks (RFC 3261 §10.3 steps 1-8). The syntax checks run
before authentication because they depend on nothing secret (so a
malformed request such as RFC 4475 ``unksm2`` gets its 400 at once):

  - a Request-URI that is not SIP/SIPS: 416; a To that is not SIP/SIPS
    (RFC 4475 §3.3.4: "the To: header field is required to contain a SIP or
    SIPS URI as an AOR"), a malformed Contact or Expires, or ``Contact: *``
    with other contacts or a non-zero expiry (step 6): 400;
  - step 1: a Request-URI naming another domain: 404. We are not a proxy,
    so we cannot forward it as the RFC suggests; 404 "Not Found" is what
    Kamailio and Asterisk answer too;
  - step 2: an unsupported ``Require``d option: 420 + ``Unsupported`` (``path``
    is supported only for REGISTERs whose Path is accepted: ``path =
    trusted`` and a source in ``trusted_proxies``);
  - more Contacts than ``max_contacts``: 503, as below;
  - step 3: missing, unusable (another scheme: RFC 4475 ``regaut01``) or
    wrong credentials: 401 with fresh challenges (``stale=true`` when the
    response was right but its nonce too old). An unknown user and a wrong
    password get exactly the same answer after the same work;
  - step 5: an AOR outside our domain: 404 (checked before step 4, since
    nobody here owns such an AOR);
  - step 4: the authenticated user does not own the AOR: 403;
  - step 7: an expiry under the minimum: 423 + ``Min-Expires``; a Call-ID
    reused with a CSeq not higher than the stored one: the update is
    aborted and "the request fails" — with 500, the status the same step
    prescribes for failed updates; an update that would leave the AOR with
    more than ``max_contacts`` bindings: 503 (what Kamailio's registrar
    answers), nothing applied;
  - step 8: 200 listing every current binding with its remaining
    ``expires``, and a ``Date``.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, NoReturn

from attrs import field, frozen, validators
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from clicktodial.interfaces import (
    ILocationStore,
    IUserChangeNotifier,
    IUserStore,
    IVerifiedRegistration,
)
from clicktodial.log import LOG_LEVELS
from clicktodial.netaddr import NetworkSet
from clicktodial.sip.address import Source, format_host_port
from clicktodial.sip.digest import (
    ALGORITHMS,
    DigestAuthenticator,
    DigestCredentials,
    Verdict,
    select_credentials,
)
from clicktodial.sip.headers import HeaderParseError, NameAddr, parse_name_addr
from clicktodial.sip.interfaces import IFlowKeeper
from clicktodial.sip.message import Request, Response, make_response, new_tag
from clicktodial.sip.uri import URI, URIParseError, parse_uri
from clicktodial.sip.wirecache import BoundedCache
from clicktodial.store.errors import OutOfOrderRegistration, StoreError, TooManyBindings
from clicktodial.store.values import (
    Binding,
    BindingChanges,
    ContactChange,
    SipCredentials,
    VerifiedUpdate,
)
from clicktodial.throttle import (
    AuthAttempt,
    AuthThrottle,
    ThrottleRefused,
    ThrottleSettings,
)

if TYPE_CHECKING:
    from clicktodial.config import RegistrarConfig

__all__ = [
    "CredentialsCache",
    "Registrar",
    "RegistrarSettings",
    "canonical_aor",
    "normal_host",
    "phone_host",
    "settings_from_config",
    "contact_key",
]

#: Option tags we support in ``Require`` (RFC 3327 Path), when the Path of the
#: request is accepted (:meth:`RegistrarSettings.path`); otherwise none.
SUPPORTED_OPTIONS = frozenset({"path"})
_NO_OPTIONS: frozenset[str] = frozenset()

#: The answer to a REGISTER that would leave its AOR with more than
#: ``max_contacts`` bindings: Kamailio's registrar answers 503 with "Too many
#: registered contacts"; without Retry-After a UA treats it as a 500 (RFC 3261
#: §21.5.4) and does not retry at once.
_TOO_MANY_CONTACTS = (503, "Service Unavailable (Too Many Registered Contacts)")

# RFC 3261 §10.3 step 7: 423 only applies to intervals under one hour.
_ONE_HOUR = 3600
# RFC 3261 §20.19: an expiry is at most 2**32-1 seconds.
_MAX_EXPIRES_VALUE = 2**32 - 1

#: Most users whose Digest secrets the registrar keeps in memory (least recently used
#: leave first): about 200 bytes each.
CREDENTIALS_CACHE_ENTRIES = 100_000


def normal_host(host: str) -> str:
    """
    A host as hosts are compared (RFC 3261 §19.1.4): lower case, an IPv6
    address without brackets and in its compressed form (RFC 5952), so
    ``[2001:DB8:0::10]`` and ``2001:db8::10`` are one host.
    """
    # Hosts repeat from message to message (ours, each phone's): remembered,
    # in a bounded cache since they come from the network.
    normal = _NORMAL_HOSTS.get(host)
    if normal is None:
        normal = _NORMAL_HOST_CACHE.remember(host, _normal_host(host))
    return normal


_NORMAL_HOST_CACHE: BoundedCache[str, str] = BoundedCache("registrar.normal_host")
#: The remembered hosts. The REGISTER path reads them as
#: ``_NORMAL_HOSTS.get(host) or normal_host(host)``: a host seen before costs a dict
#: look-up, not a function call (five hosts per REGISTER).
_NORMAL_HOSTS = _NORMAL_HOST_CACHE.entries


def _normal_host(host: str) -> str:
    host = host.lower()
    if ":" in host:
        host = host.strip("[]")
        try:
            return ipaddress.IPv6Address(host).compressed
        except ValueError:
            return host
    return host


def _host_set(hosts: Iterable[str]) -> frozenset[str]:
    # Hosts compare case-insensitively (RFC 3261 §19.1.4); IPv6 without [].
    if isinstance(hosts, str):
        raise TypeError("aliases must be a collection of host names")
    return frozenset(normal_host(h) for h in hosts)


def _algorithm_list(names: Iterable[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError("digest_algorithms must be a collection of names")
    algorithms = tuple(name.upper() for name in names)
    unknown = [name for name in algorithms if name not in ALGORITHMS]
    if unknown or not algorithms or len(set(algorithms)) != len(algorithms):
        raise ValueError("digest_algorithms must name SHA-256 and/or MD5, each once")
    return algorithms


@frozen
class RegistrarSettings:
    """
    Registrar policy (the ``[registrar]`` config section).

    :ivar default_expires: lifetime of a binding when neither the contact
        nor the request says (RFC 3261 §10.2.1.1 suggests 3600).
    :ivar min_expires: shortest lifetime accepted (``423`` below it).
    :ivar max_expires: longer requested lifetimes are shortened to this.
    :ivar nonce_lifetime: seconds a Digest nonce stays fresh.
    :ivar nonce_secret: the HMAC key of the nonces; daemons serving one
        domain from one database must share it. :class:`None` draws a random one
        (fine for a single daemon: nonces do not survive a restart).
    :ivar purge_interval: seconds between purges of expired bindings
        (0 disables; lookups ignore expired bindings anyway).
    :ivar aliases: other host names and addresses (lower case) that name
        our domain in a Request-URI or To (e.g. the server's IP address);
        AORs written with an alias are stored under the domain.
    :ivar max_delayed: most answers held back by the throttle at once;
        past that, failing requests are refused at once (503).
    :ivar digest_algorithms: the challenges of a 401, in order. RFC 8760
        puts SHA-256 first; but some clients answer only the first
        challenge (SIPp 3.6 fails on a first SHA-256 one): put MD5 first,
        or alone, for those.
    :ivar credentials_cache_seconds: how long a user's HA1s, once read from
        the user store, are used from memory (0: read them for every
        authenticated REGISTER); see :class:`CredentialsCache`.
    :ivar path: ``"off"``: every RFC 3327 Path is ignored; ``"trusted"``: the
        Path of a REGISTER from ``trusted_proxies`` is stored (and becomes the
        route of requests to the binding), any other is ignored. An ignored
        Path leaves the binding routed to the REGISTER's source address.
    :ivar trusted_proxies: the addresses of the edge proxies in front of us
        (``[registrar] trusted_proxies``); for a REGISTER from one of them, the
        throttle also counts the phone's address as the proxy recorded it
        (:func:`phone_host`).
    :ivar max_contacts: most bindings per AOR, and most Contacts in one
        REGISTER (docs/registrar.md, "Binding trust").
    """

    default_expires: int = field(default=3600, validator=validators.ge(1))
    min_expires: int = field(default=60, validator=validators.ge(0))
    max_expires: int = field(default=86400, validator=validators.ge(1))
    nonce_lifetime: float = field(default=300.0, validator=validators.gt(0))
    nonce_secret: bytes | None = None
    purge_interval: float = field(default=60.0, validator=validators.ge(0))
    aliases: frozenset[str] = field(default=frozenset(), converter=_host_set)
    max_delayed: int = field(default=1000, validator=validators.ge(0))
    digest_algorithms: tuple[str, ...] = field(
        default=("SHA-256", "MD5"), converter=_algorithm_list
    )
    credentials_cache_seconds: float = field(default=60.0, validator=validators.ge(0))
    path: str = field(default="off", validator=validators.in_(("off", "trusted")))
    trusted_proxies: NetworkSet = NetworkSet()
    max_contacts: int = field(default=5, validator=validators.ge(1))

    def accepts_path_from(self, host: str) -> bool:
        """Whether the Path of a REGISTER from ``host`` (an IP address) is stored."""
        return self.path == "trusted" and host in self.trusted_proxies

    def __attrs_post_init__(self) -> None:
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError(
                "registrar expiry settings must satisfy"
                " min_expires <= default_expires <= max_expires"
            )


class _Reject(Exception):
    """Stop handling a request and answer with this status."""

    def __init__(
        self, status: int, reason: str | None = None, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = headers


def canonical_aor(uri: URI, domain: str, aliases: Iterable[str] = ()) -> str:
    """
    The AOR a SIP/SIPS URI names (RFC 3261 §10.3 step 5): ``sip:user@host``
    with the host normalised (:func:`normal_host`), without port, parameters or
    headers. SIPS maps to SIP: one AOR, however the phone chose to reach
    us. A host that is ``domain`` or in ``aliases`` (normalised hosts) is
    written as ``domain`` (an IPv6 domain in brackets, as in a SIP URI).
    """
    host = uri.host
    host = _NORMAL_HOSTS.get(host) or normal_host(host)
    domain_host = _NORMAL_HOSTS.get(domain) or normal_host(domain)
    if host == domain_host or host in aliases:
        host = domain_host
    if ":" in host:
        host = f"[{host}]"
    return f"sip:{uri.user}@{host}" if uri.user is not None else f"sip:{host}"


def contact_key(uri: URI) -> str:
    """
    A text that is equal for two contact URIs iff they are equal under the
    RFC 3261 §19.1.4 comparison rules (as far as a binding needs): scheme,
    user, password and port exactly; host and parameters
    case-insensitively, parameters in any order; URI headers exactly.
    """
    if not uri.is_sip:
        return str(uri)
    host = uri.host
    # (Most contacts have neither: no generator run for them.)
    params = (
        ";".join(sorted(k if v is None else f"{k}={v.lower()}" for k, v in uri.params.items()))
        if uri.params
        else ""
    )
    headers = "&".join(f"{k.lower()}={v}" for k, v in sorted(uri.headers)) if uri.headers else ""
    return (
        f"{uri.scheme}:{uri.user or ''}:{uri.password or ''}@"
        f"{_NORMAL_HOSTS.get(host) or normal_host(host)}:{uri.port or ''};{params}?{headers}"
    )


def phone_host(request: Request, proxies: NetworkSet) -> str | None:
    """
    The phone's IP address as a proxy of ``proxies`` in front of us recorded
    it in a REGISTER it relayed (the caller checked that the request came
    from one of them): the ``received`` of the topmost Path when that Path
    names one of ``proxies`` (RFC 3327 §4.1: the proxy next to us added it;
    Kamailio's ``add_path_received`` writes
    ``<sip:FRONT;lr;received=sip:PHONE:PORT>``); else the first Via below
    the proxies' own, by its ``received`` (RFC 3261 §18.2.1: the proxy adds
    it whenever the sent-by is not the packet's source) or its sent-by.
    ``None`` when the request records no address.

    Used only as the throttle's key: what it names was written by a proxy
    we trust, everything else in the request by the phone.
    """
    try:
        paths = request.headers.get_fields("Path")
        if paths:
            top = parse_name_addr(paths[0]).uri
            received = top.param("received")
            if received and normal_host(top.host) in proxies:
                host = _address_of(received)
                if host is not None:
                    return host
        for via in request.vias[1:]:
            host = normal_host(via.received or via.host)
            if host not in proxies:
                return host if _is_ip(host) else None
    except (HeaderParseError, URIParseError, ValueError):
        pass
    return None


def _address_of(received: str) -> str | None:
    # "sip:192.0.2.7:5060;transport=udp" (the URI param value, unescaped)
    # or a bare address.
    text = received.strip('"')
    if ":" in text and text.split(":", 1)[0].lower() in ("sip", "sips"):
        host = normal_host(parse_uri(text).host)
    else:
        host = normal_host(text)
    return host if _is_ip(host) else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _source_uri(source: Source) -> str:
    # Binding.received: where to send requests for a phone behind NAT,
    # written as a SIP URI the UA core can parse back.
    host_port = format_host_port(source.remote_host, source.remote_port)
    return f"sip:{host_port};transport={source.transport.lower()}"


def _outbound_flow(request: Request, source: Source) -> bool:
    """
    Whether ``request`` registers an RFC 5626 flow over a stream connection:
    ``Supported: outbound`` and a Contact with ``+sip.instance`` and ``reg-id``.
    """
    if source.connection is None or "outbound" not in _option_tags(request, "Supported"):
        return False
    return any(
        c.param("reg-id") is not None and c.param("+sip.instance") is not None
        for c in request.contacts
    )


def _option_tags(request: Request, name: str) -> frozenset[str]:
    if name not in request.headers:  # the usual case: one look-up, no list
        return _NO_OPTIONS
    tags = request.headers.get_all(name)
    if not tags:
        return _NO_OPTIONS
    return frozenset(tag.lower() for tag in tags if tag)


def _ha1(stored: SipCredentials, algorithm: str) -> str:
    return stored.ha1_sha256 if algorithm == "SHA-256" else stored.ha1_md5


def _release(failure: Failure, attempt: AuthAttempt) -> Failure:
    # The store failed before any password was checked: the attempt's slot goes back.
    attempt.released()
    return failure


def _forbidden() -> _Reject:
    return _Reject(403, "Forbidden (Not Your Address of Record)")


class _StoredDigestCheck:
    """
    The Digest check a store runs on the credentials it read, inside the transaction that
    then writes the bindings (:class:`IVerifiedRegistration`): true when the response is
    right for them (:data:`Verdict.OK`). It runs on a store thread (the authenticator's
    nonce counts are thread-safe) and keeps its verdict, so a transaction run again answers
    the same without counting the nonce's ``nc`` twice.
    """

    __slots__ = ("_authenticator", "_credentials", "_method", "_issued_at", "_ha1", "verdict")

    def __init__(
        self,
        authenticator: DigestAuthenticator,
        credentials: DigestCredentials,
        method: str,
        issued_at: float,
    ) -> None:
        self._authenticator = authenticator
        self._credentials = credentials
        self._method = method
        self._issued_at = issued_at
        self._ha1: str | None = None
        #: The verdict on the credentials the store read (``None`` until it called).
        self.verdict: Verdict | None = None

    def __call__(self, stored: SipCredentials | None) -> bool:
        credentials = self._credentials
        if stored is None:
            ha1 = None
        else:  # (_ha1, written out: this runs in every verified REGISTER's transaction)
            sha256 = credentials.algorithm == "SHA-256"
            ha1 = stored.ha1_sha256 if sha256 else stored.ha1_md5
        if self.verdict is None or ha1 != self._ha1:
            self._ha1 = ha1
            self.verdict = self._authenticator.verify(
                credentials, self._method, ha1, self._issued_at
            )
        return self.verdict is Verdict.OK


def _quote_param(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class CredentialsCache:
    """
    Users' Digest secrets (HA1s) kept in memory for ``ttl`` seconds after
    the user store gave them, so that a phone registering again soon does
    not wait on the store. Bounded: at most ``max_entries`` users, the least
    recently used leave first.

    Correctness (docs/registrar.md, "Credentials cache"):

      - only found, enabled users are kept: a new or re-enabled user
        authenticates at once;
      - the registrar uses a cached HA1 only to accept: a response that
        does not match it is checked again against a fresh read, so a new
        password works at once everywhere;
      - :func:`forget` drops a user (the store calls it after this daemon changed
        or removed that user), and a read that was running meanwhile is not
        kept (generations);
      - a password changed, or a user disabled or removed, by another daemon
        sharing the database or by the CLI is seen here within ``ttl``: the
        old password is accepted that long.
    """

    __slots__ = ("_clock", "ttl", "_max", "_entries", "generation")

    def __init__(
        self, clock: IReactorTime, ttl: float, max_entries: int = CREDENTIALS_CACHE_ENTRIES
    ) -> None:
        self._clock = clock
        self.ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, SipCredentials]] = OrderedDict()
        #: Changes with every :func:`forget`: a read started under an older
        #: generation is not kept.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, username: str) -> SipCredentials | None:
        """The user's cached secrets, if read within ``ttl`` seconds."""
        entry = self._entries.get(username)
        if entry is None:
            return None
        if entry[0] <= self._clock.seconds():
            del self._entries[username]
            return None
        self._entries.move_to_end(username)
        return entry[1]

    def put(self, username: str, credentials: SipCredentials | None, generation: int) -> None:
        """
        Keep what the store answered for a read started under
        ``generation`` (nothing for an unknown or disabled user, or a read
        that overlapped a :func:`forget`).
        """
        entries = self._entries
        if credentials is None:
            # Unknown or disabled now: not kept, and forgotten if it was.
            entries.pop(username, None)
            return
        if not self.ttl or generation != self.generation:
            return
        entries[username] = (self._clock.seconds() + self.ttl, credentials)
        entries.move_to_end(username)
        while len(entries) > self._max:
            entries.popitem(last=False)

    def forget(self, username: str) -> None:
        """Drop a user (changed or removed here)."""
        self.generation += 1
        self._entries.pop(username, None)


class Registrar(Service):
    """
    Answers REGISTER requests for one domain.

    :param clock: time source and scheduler.
    :param user_store: where digest HA1s come from (its ``realm`` is the
        realm we challenge with).
    :param location_store: where bindings live.
    :param domain: our SIP domain (lower-cased).
    :param settings: registrar policy.
    :param throttle: the authentication failure throttle; a default one if
        not given.
    :param flows: the transport's :class:`IFlowKeeper`: told how long the bindings
        registered over a TCP/TLS connection live, so that it keeps that
        connection (the phone's way in) open; it also gives the Flow-Timer.
    :param registrations: a store that reads the credentials and writes the bindings of
        an authenticated REGISTER in one operation (:class:`IVerifiedRegistration`), used
        when the cached credentials do not do; it must hold both ``user_store``'s users and
        the bindings ``location_store`` serves. Those bindings are then written to it
        directly, not through ``location_store``: whatever caches them listens to
        :attr:`binding_listeners`. ``None``: a credentials read, then an update.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        user_store: IUserStore,
        location_store: ILocationStore,
        domain: str,
        settings: RegistrarSettings | None = None,
        throttle: AuthThrottle | None = None,
        flows: IFlowKeeper | None = None,
        registrations: IVerifiedRegistration | None = None,
    ) -> None:
        self._clock = clock
        self._registrations = registrations
        self._flows = flows
        self._users = user_store
        self._locations = location_store
        self.domain = domain.lower()
        domain_host = normal_host(domain)
        self.settings = settings if settings is not None else RegistrarSettings()
        self._hosts = frozenset({domain_host}) | self.settings.aliases
        # What a user owns: sip:USERNAME@DOMAIN, as canonical_aor writes it.
        self._aor_host = f"[{domain_host}]" if ":" in domain_host else domain_host
        secret = self.settings.nonce_secret
        self.authenticator = DigestAuthenticator(
            clock,
            user_store.realm,
            secret if secret is not None else os.urandom(32),
            nonce_lifetime=self.settings.nonce_lifetime,
            algorithms=self.settings.digest_algorithms,
        )
        self.throttle = throttle if throttle is not None else AuthThrottle(clock)
        self.credentials = CredentialsCache(clock, self.settings.credentials_cache_seconds)
        # A user store that tells of users whose credentials changed
        # (IUserChangeNotifier) has them leave the cache at once; with another,
        # a change is seen within credentials_cache_seconds.
        notifier = IUserChangeNotifier(user_store, None)
        if notifier is not None:
            notifier.subscribe(self.credentials.forget)
        self._delayed = 0
        self._purge: LoopingCall | None = None
        self._date_second = -1
        self._date_text = ""
        #: called with (aor, its unexpired bindings) after a REGISTER updated them here
        #: (the web's live presence: clicktodial.web.events.RegistrationMonitor; the
        #: directory's cache when ``registrations`` writes past it)
        self.binding_listeners: list[Callable[[str, Sequence[Binding]], object]] = []

    # -- service -------------------------------------------------------------

    def startService(self) -> None:
        """Start purging expired bindings every ``purge_interval`` seconds."""
        self.running = True
        if self.settings.purge_interval > 0:
            self._purge = LoopingCall(self._purge_expired)
            self._purge.clock = self._clock
            self._purge.start(self.settings.purge_interval, now=False)

    def stopService(self) -> None:
        """Stop the purge timer."""
        if self._purge is not None and self._purge.running:
            self._purge.stop()
        self._purge = None
        self.running = False

    def _purge_expired(self) -> Deferred[None]:
        def done(count: int) -> None:
            if count:
                self.log.debug("Purged {count} expired bindings", count=count)

        def failed(failure: Failure) -> None:
            # Keep the LoopingCall running: the next purge may succeed.
            self.log.failure("Purging expired bindings failed", failure)

        d = self._locations.purge_expired(self._clock.seconds())
        return d.addCallbacks(done, failed)

    # -- REGISTER ------------------------------------------------------------

    def handle_register(self, request: Request, source: Source) -> Deferred[Response]:
        """
        Process a REGISTER request (RFC 3261 §10.3).

        :param source: the address the request came from (stored with the
            bindings for NAT traversal, and the key of the throttle).
        :return: fires with the final response; never fails.
        """
        # Plain calls and callbacks, no coroutine: a REGISTER whose answer is at hand (a
        # 4xx, a memory store) costs no Deferred chain beyond the one returned.
        try:
            response = self._register(request, source)
        except Exception:
            return succeed(self._refusal(Failure(), request, source))
        if isinstance(response, Deferred):
            # A Deferred of its own, fired with the answer: ``called`` means answered
            # (the chain above it may be paused on a throttle delay).
            answered: Deferred[Response] = Deferred()
            response.addCallbacks(
                answered.callback,
                self._refused_later,
                errbackArgs=(answered, request, source),
            )
            return answered
        return succeed(response)

    def _refused_later(
        self, failure: Failure, answered: Deferred[Response], request: Request, source: Source
    ) -> None:
        answered.callback(self._refusal(failure, request, source))

    def _refusal(self, failure: Failure, request: Request, source: Source) -> Response:
        """The response to a REGISTER whose handling ended in ``failure``."""
        error = failure.value
        if isinstance(error, _Reject):
            return self._response(request, error.status, error.reason, error.headers)
        if isinstance(error, (HeaderParseError, URIParseError)):
            # The parsers quote the offending text with repr(): no CR/LF
            # can reach the status line. Keep the phrase short.
            return self._response(request, 400, f"Bad Request ({str(error)[:100]})")
        if isinstance(error, TooManyBindings):
            self.log.info(
                "REGISTER for {aor} refused: {error}",
                aor=error.aor,
                error=str(error),
                peer=source.peer,
                call_id=request.call_id,
            )
            return self._response(request, *_TOO_MANY_CONTACTS)
        if isinstance(error, OutOfOrderRegistration):
            # RFC 3261 §10.3 step 7: "the update MUST be aborted and the
            # request fails"; failed updates get 500 (same step).
            self.log.info(
                "Out-of-order REGISTER for {aor}: {error}",
                aor=error.aor,
                error=str(error),
                peer=source.peer,
                call_id=error.call_id,
            )
            return self._response(request, 500, "Server Internal Error (Out of Order CSeq)")
        if isinstance(error, StoreError):
            self.log.failure("Location service failed for REGISTER", failure, peer=source.peer)
            return self._response(request, 500, None, [("Retry-After", "5")])
        self.log.failure("Unexpected error handling REGISTER", failure, peer=source.peer)
        return self._response(request, 500, None)

    def stateless_challenge(self, request: Request, source: Source) -> Response | None:
        """
        The 401 for a REGISTER that carries no ``Authorization`` at all (how
        every phone starts), made at once so that it can be sent without a
        server transaction (RFC 3261 §8.2.7; Kamailio answers it with
        ``sl_send_reply``): half of a registration's requests then cost no
        transaction and no 32 s Timer J.  A retransmission of the request is
        simply challenged again, with a fresh nonce; nothing is stored.

        ``None`` (answer it statefully with :func:`handle_register`) for anything
        else: credentials present, a request the syntax checks refuse (its
        4xx comes from the usual path, with its log line), a throttled
        source.  The checks and the challenge are those of :func:`handle_register`.
        """
        if "Authorization" in request.headers:
            return None
        try:
            self._check(request, source, build=False)
        except (_Reject, HeaderParseError, URIParseError):
            return None
        if self._refused_without_credentials(request, source) > 0:
            return None
        reject = self._challenge()
        return self._response(request, reject.status, reject.reason, reject.headers)

    def _check(
        self, request: Request, source: Source, build: bool = True
    ) -> tuple[list[_Contact], bool, str, bool]:
        """
        The checks of §10.3 that do not depend on who is asking (syntax,
        steps 1 and 2, the number of Contacts): the contact changes, whether
        the Contact is ``*``, the AOR, and whether the AOR is in our domain.
        With ``build`` false (the stateless challenge), the checks only: no
        contact changes and no AOR are made (``[]`` and ``""``).

        :raises _Reject: with the response the request gets.
        """
        # Syntax first: nothing here depends on who is asking.
        ruri = request.uri
        if not ruri.is_sip:
            raise _Reject(416)
        to = request.to
        if not to.uri.is_sip:
            raise _Reject(400, "Bad Request (To Is Not a SIP or SIPS URI)")
        header_expires = request.expires
        wildcard = request.contact_is_star
        contacts = request.contacts
        if wildcard:
            # RFC 3261 §10.3 step 6.
            if contacts or len(request.headers.get_all("Contact")) != 1:
                raise _Reject(400, "Bad Request (Wildcard Contact Not Alone)")
            if header_expires != 0:
                raise _Reject(400, "Bad Request (Wildcard Contact Needs Expires: 0)")
        changes = self._contact_changes(contacts, header_expires, build)

        # Step 1: the Request-URI must name our domain.
        host = ruri.host
        if (_NORMAL_HOSTS.get(host) or normal_host(host)) not in self._hosts:
            raise _Reject(404, "Not Found (Domain Not Served Here)")
        # Step 2: RFC 3261 §8.2.2.3. RFC 3327 §5.3: a registrar that will not
        # store this request's Path (path = off, or a source that is not a
        # trusted proxy) answers a Require: path as one without Path support.
        required = _option_tags(request, "Require")
        if required:
            supported = (
                SUPPORTED_OPTIONS
                if self.settings.accepts_path_from(source.remote_host)
                else _NO_OPTIONS
            )
            unsupported = required - supported
            if unsupported:
                raise _Reject(420, None, [("Unsupported", ", ".join(sorted(unsupported)))])
        if len(contacts) > self.settings.max_contacts:
            # Refused before any work on credentials or the store: no UA needs
            # more Contacts in one REGISTER than its AOR may have bindings.
            raise _Reject(*_TOO_MANY_CONTACTS)

        if not build:
            return changes, wildcard, "", False
        aor = canonical_aor(to.uri, self.domain, self.settings.aliases)
        host = to.uri.host
        return changes, wildcard, aor, (_NORMAL_HOSTS.get(host) or normal_host(host)) in self._hosts

    def _register(self, request: Request, source: Source) -> Response | Deferred[Response]:
        """
        RFC 3261 §10.3 for one REGISTER: the response, or a Deferred of it when the store
        (or a throttle delay) has to be waited for. A refusal raises (or fails) with
        :class:`_Reject`; :meth:`_refusal` turns every error into its response.

        Steps 3, 5 and 4 (5 before 4: an AOR of another domain is owned by nobody here,
        and deserves 404 rather than 403), then 7 and 8.
        """
        now = self._clock.seconds()
        changes, wildcard, aor, our_aor = self._check(request, source)
        credentials = select_credentials(
            request.headers.get_fields("Authorization"), self.authenticator.realm
        )
        if credentials is None:
            left = self._refused_without_credentials(request, source)
            if left > 0:
                raise _Reject(503, None, [("Retry-After", str(math.ceil(left)))])
            # No credentials, or none we can use: challenge (RFC 4475
            # §3.3.7). Not a failure: every phone starts this way.
            raise self._challenge()
        peer = self._phone_host(request, source)
        # Reserve before checking (docs/registrar.md, "Throttling"): the
        # attempt counts as a failure in flight before the user's secrets
        # are read, so however many guesses arrive at once, at most
        # refuse_after of them are checked.
        try:
            attempt = self.throttle.begin(peer, credentials.username)
        except ThrottleRefused as refused:
            raise _Reject(
                503, None, [("Retry-After", str(math.ceil(refused.retry_after)))]
            ) from None
        # Every way out settles the attempt: anything that neither failed nor succeeded
        # (a stale or foreign nonce, a store error) tested no password and gives the slot
        # back (AuthAttempt.released does nothing once settled).
        try:
            return self._authenticate(
                attempt, credentials, request, source, now, changes, wildcard, aor, our_aor
            )
        except BaseException:
            attempt.released()
            raise

    def _authenticate(
        self,
        attempt: AuthAttempt,
        credentials: DigestCredentials,
        request: Request,
        source: Source,
        now: float,
        changes: list[_Contact],
        wildcard: bool,
        aor: str,
        our_aor: bool,
    ) -> Response | Deferred[Response]:
        """
        Check the credentials (step 3), then go on with the request: with the user's HA1s
        from the credentials cache when they match, else read from the store — together
        with the binding update in one store operation when the store offers it
        (:class:`IVerifiedRegistration`) and the update is what a right password leads to.
        """
        authenticator = self.authenticator
        issued_at = authenticator.check_nonce(credentials)
        if issued_at is None or not self._uri_matches(credentials, request):
            # Not a password guess: nothing was checked against a secret
            # and nothing is learnt. A phone holding a nonce from before a
            # restart (with a new random secret) lands here; a fresh
            # challenge is all it needs.
            self.log.info(
                "Unusable nonce or digest-uri from {username}",
                username=credentials.username,
                peer=attempt.peer,
                aor=aor,
            )
            raise self._challenge()
        username = credentials.username
        method = request.method
        cache = self.credentials
        # The cached HA1 is used only to accept; one that does not match is checked
        # again against a fresh read (the password may have changed).
        cached = cache.get(username)
        cached_ha1 = None
        if cached is not None:
            cached_ha1 = _ha1(cached, credentials.algorithm)
            verdict = authenticator.verify(credentials, method, cached_ha1, issued_at)
            if verdict is not Verdict.INVALID:
                return self._verified(
                    verdict, attempt, request, source, now, changes, wildcard, aor, our_aor
                )
        generation = cache.generation
        registrations = self._registrations
        if (
            registrations is not None
            and (changes or wildcard)
            and our_aor
            and aor == f"sip:{username}@{self._aor_host}"
            and self._too_short(changes) is None
        ):
            # One store operation: the credentials read, checked by the store (inside its
            # transaction, on its thread), and only if they are right the bindings written.
            check = _StoredDigestCheck(authenticator, credentials, method, issued_at)
            binding_changes = self._binding_changes(request, source, aor, changes, wildcard)
            return registrations.update_bindings_if_verified(
                username, check, aor, binding_changes, now
            ).addCallbacks(
                self._verified_update,
                self._verified_update_failed,
                callbackArgs=(
                    attempt,
                    check,
                    generation,
                    request,
                    source,
                    now,
                    aor,
                    binding_changes,
                ),
                errbackArgs=(attempt, check),
            )
        # The store round trip. get_sip_credentials fires with None for
        # unknown and disabled users alike.
        return self._users.get_sip_credentials(username).addCallbacks(
            self._credentials_read,
            _release,
            callbackArgs=(
                attempt,
                credentials,
                issued_at,
                cached_ha1,
                generation,
                request,
                source,
                now,
                changes,
                wildcard,
                aor,
                our_aor,
            ),
            errbackArgs=(attempt,),
        )

    def _credentials_read(
        self,
        stored: SipCredentials | None,
        attempt: AuthAttempt,
        credentials: DigestCredentials,
        issued_at: float,
        cached_ha1: str | None,
        generation: int,
        request: Request,
        source: Source,
        now: float,
        changes: list[_Contact],
        wildcard: bool,
        aor: str,
        our_aor: bool,
    ) -> Response | Deferred[Response]:
        """
        The user's credentials are read: check the response against them and go on.

        The work is the same for an unknown user and a wrong password: one
        store read and one digest computation (the order differs when the
        user was cached), so timing tells nothing about who exists.
        """
        self.credentials.put(credentials.username, stored, generation)
        ha1 = _ha1(stored, credentials.algorithm) if stored is not None else None
        if cached_ha1 is not None and ha1 == cached_ha1:
            # The same HA1 that did not match just now.
            verdict = Verdict.INVALID
        else:
            try:
                verdict = self.authenticator.verify(credentials, request.method, ha1, issued_at)
            except BaseException:
                attempt.released()
                raise
        return self._verified(
            verdict, attempt, request, source, now, changes, wildcard, aor, our_aor
        )

    def _verified_update(
        self,
        result: VerifiedUpdate,
        attempt: AuthAttempt,
        check: _StoredDigestCheck,
        generation: int,
        request: Request,
        source: Source,
        now: float,
        aor: str,
        binding_changes: BindingChanges,
    ) -> Response | Deferred[Response]:
        """The store read the credentials, checked them and (if right) wrote the bindings."""
        # (No typing.cast on this path: it is a Python call.) begin() had the username.
        username = attempt.username or ""
        self.credentials.put(username, result.credentials, generation)
        bindings = result.bindings
        if bindings is None:
            # Refused, nothing written: a stale nonce, or a wrong password (an unknown user).
            if check.verdict is Verdict.STALE:
                attempt.released()
                raise self._challenge(stale=True)
            return self._fail(attempt, aor, "wrong password or unknown user", self._challenge)
        attempt.succeeded()
        return self._updated(bindings, request, source, now, aor, binding_changes)

    @staticmethod
    def _verified_update_failed(
        failure: Failure, attempt: AuthAttempt, check: _StoredDigestCheck
    ) -> Failure:
        # The store refuses an update (step 7) only after the credentials were right.
        if check.verdict is Verdict.OK:
            attempt.succeeded()
        else:
            attempt.released()
        return failure

    def _verified(
        self,
        verdict: Verdict,
        attempt: AuthAttempt,
        request: Request,
        source: Source,
        now: float,
        changes: list[_Contact],
        wildcard: bool,
        aor: str,
        our_aor: bool,
    ) -> Response | Deferred[Response]:
        """The credentials were checked: settle the attempt, then apply the request."""
        refused = self._settle(verdict, attempt, aor, our_aor, attempt.username or "")
        if refused is not None:
            return refused
        return self._apply(request, source, now, changes, wildcard, aor)

    def _settle(
        self, verdict: Verdict, attempt: AuthAttempt, aor: str, our_aor: bool, username: str
    ) -> Deferred[Any] | None:
        """
        Steps 3, 5 and 4 once the credentials are checked: ``None`` when the request may
        proceed (the attempt succeeded); otherwise raises :class:`_Reject`, or returns a
        Deferred failing with it after the throttle's delay.
        """
        if verdict is Verdict.INVALID:
            return self._fail(attempt, aor, "wrong password or unknown user", self._challenge)
        if verdict is Verdict.STALE:
            attempt.released()
            raise self._challenge(stale=True)
        if not our_aor:
            attempt.released()
            raise _Reject(404, "Not Found (Address of Record Not Served Here)")
        # Step 4: users may only register their own AOR.
        if aor != f"sip:{username}@{self._aor_host}":
            return self._fail(attempt, aor, "user does not own the address of record", _forbidden)
        attempt.succeeded()
        return None

    def _too_short(self, changes: list[_Contact]) -> _Reject | None:
        """Step 7: the 423 for an interval the policy finds too short, if one is."""
        min_expires = self.settings.min_expires
        shortest = min(min_expires, _ONE_HOUR)
        for change in changes:
            if 0 < change.requested < shortest:
                return _Reject(423, None, [("Min-Expires", str(min_expires))])
        return None

    def _binding_changes(
        self,
        request: Request,
        source: Source,
        aor: str,
        changes: list[_Contact],
        wildcard: bool,
    ) -> BindingChanges:
        # Any: mypy's attrs plugin cannot type converter=tuple (and typing.cast is a call).
        contact_changes: Any = tuple([c.change for c in changes])
        return BindingChanges(
            call_id=request.call_id,
            cseq=request.cseq.seq,
            contacts=contact_changes,
            wildcard=wildcard,
            path=self._accepted_path(request, source, aor),
            # Where requests to the binding go, whatever its Contact names
            # (host, port, maddr, transport): docs/registrar.md, "Binding
            # trust".
            received=_source_uri(source),
            user_agent=request.headers.get("User-Agent"),
            max_bindings=self.settings.max_contacts,
        )

    def _apply(
        self,
        request: Request,
        source: Source,
        now: float,
        changes: list[_Contact],
        wildcard: bool,
        aor: str,
    ) -> Deferred[Response]:
        """The authenticated request's effect on the location service (steps 6-8)."""
        if not changes and not wildcard:
            # A query (RFC 3261 §10.2.3): list the bindings.
            return self._locations.get_bindings(aor, now).addCallback(
                lambda bindings: self._ok(request, source, bindings, now)
            )
        too_short = self._too_short(changes)
        if too_short is not None:
            raise too_short
        binding_changes = self._binding_changes(request, source, aor, changes, wildcard)
        return self._locations.update_bindings(aor, binding_changes, now).addCallback(
            self._updated, request, source, now, aor, binding_changes
        )

    def _updated(
        self,
        bindings: list[Binding],
        request: Request,
        source: Source,
        now: float,
        aor: str,
        binding_changes: BindingChanges,
    ) -> Response:
        """The AOR's bindings were updated: tell who listens, answer 200 (step 8)."""
        if self._flows is not None and source.connection is not None:
            # Keep the connection open while a binding made over it lives
            # (a de-REGISTER leaves none: the hold is released).
            received = binding_changes.received
            self._flows.keep_flow(
                source,
                aor,
                max((b.expires_at for b in bindings if b.received == received), default=now),
            )
        for listener in self.binding_listeners:
            try:
                listener(aor, bindings)
            except Exception:
                self.log.failure("binding listener failed", aor=aor)
        if LOG_LEVELS.debug:  # the event is not even built at [log] level info and above
            self.log.debug(
                "REGISTER {aor}: {count} binding(s)",
                aor=aor,
                count=len(bindings),
                peer=source.peer,
                call_id=request.call_id,
            )
        return self._ok(request, source, bindings, now)

    def _accepted_path(self, request: Request, source: Source, aor: str) -> list[str]:
        """
        The Path to store with the bindings: the request's (RFC 3327 §5.3)
        when it came from a trusted proxy with ``path = trusted``, otherwise
        none. A Path is a route the daemon's INVITEs follow, so only our own
        edge may set one (Kamailio's registrar needs ``use_path``; Asterisk's
        ``support_path`` is off by default).
        """
        path = request.headers.get_all("Path")
        if not path or self.settings.accepts_path_from(source.remote_host):
            return path
        self.log.info(
            "Path of REGISTER for {aor} ignored: not from a trusted proxy with path = trusted",
            aor=aor,
            peer=source.peer,
            call_id=request.call_id,
        )
        return []

    def _contact_changes(
        self, contacts: list[NameAddr], header_expires: int | None, build: bool = True
    ) -> list[_Contact]:
        """
        The changes the Contacts ask for; with ``build`` false, only their checks (the
        stateless challenge needs nothing more) and an empty list.

        :raises _Reject: for a Contact the registrar refuses.
        """
        settings = self.settings
        default = header_expires if header_expires is not None else settings.default_expires
        changes = []
        with_reg_id = 0
        for contact in contacts:
            uri = contact.uri
            if not uri.is_sip:
                # We can only ever call a SIP phone.
                raise _Reject(400, "Bad Request (Contact Is Not a SIP or SIPS URI)")
            expires = contact.expires
            requested = default if expires is None else expires
            requested = min(requested, _MAX_EXPIRES_VALUE)
            granted = min(requested, settings.max_expires)
            instance = contact.param("+sip.instance")
            reg_id_text = contact.param("reg-id")
            reg_id: int | None = None
            if reg_id_text is not None:
                if (
                    not reg_id_text.isdigit()
                    or not reg_id_text.isascii()
                    or not 0 < int(reg_id_text) < 2**31
                ):
                    raise _Reject(400, "Bad Request (Invalid reg-id)")
                with_reg_id += 1
                # RFC 5626 §6: reg-id without +sip.instance is ignored.
                reg_id = int(reg_id_text) if instance is not None else None
            q = contact.q
            if not build:
                continue
            changes.append(
                _Contact(
                    requested,
                    ContactChange(
                        # str(uri) is the text as received: the contact is stored
                        # verbatim (RFC 4475 §3.3.14), URI headers included.
                        contact=str(uri),
                        expires=granted,
                        q=q,
                        instance_id=instance,
                        reg_id=reg_id,
                        key=contact_key(uri),
                    ),
                )
            )
        if with_reg_id > 1:
            # RFC 5626 §6: one flow per REGISTER.
            raise _Reject(400, "Bad Request (Multiple Contacts With reg-id)")
        return changes

    def _refused_without_credentials(self, request: Request, source: Source) -> float:
        """
        Seconds left of the refusal of a REGISTER without credentials: its
        source's, unless that source is known for the To user (a phone that
        registered from there keeps getting its challenge however many
        failures others behind that address made).
        """
        peer = self._phone_host(request, source)
        left = self.throttle.refused(peer)
        if left > 0:
            user = request.to.uri.user
            if user is not None and self.throttle.is_known(peer, user):
                return 0.0
        return left

    def _phone_host(self, request: Request, source: Source) -> str:
        """The address the throttle counts: the source, or behind one of
        ``trusted_proxies`` the phone's address the proxy recorded."""
        host = source.remote_host
        if host in self.settings.trusted_proxies:
            return phone_host(request, self.settings.trusted_proxies) or host
        return host

    def _uri_matches(self, credentials: DigestCredentials, request: Request) -> bool:
        # RFC 7616 §3.4.6 / RFC 2617 §3.2.2.5: the digest-uri should be the
        # Request-URI; most phones copy it verbatim. Some clients write it
        # differently (SIPp 3.6 adds the port it sent to), so a SIP URI
        # naming the same user and host is accepted too. The digest covers
        # the digest-uri as sent either way; replays are stopped by nc.
        if credentials.uri == str(request.uri):
            return True
        try:
            uri = parse_uri(credentials.uri)
        except URIParseError:
            return False
        ruri = request.uri
        return (
            uri.is_sip and uri.user == ruri.user and normal_host(uri.host) == normal_host(ruri.host)
        )

    def _fail(
        self, attempt: AuthAttempt, aor: str, why: str, reject: Callable[[], _Reject]
    ) -> Deferred[Any]:
        """
        A failed attempt: raise ``reject()`` at once, or return a Deferred failing with it
        after the throttle's delay (503 when too many answers are held back already).
        """
        delay = attempt.failed(aor)
        self.log.info(
            "Authentication failed for {username} ({why})",
            username=attempt.username,
            why=why,
            peer=attempt.peer,
            aor=aor,
        )
        if delay <= 0:
            raise reject()
        if self._delayed >= self.settings.max_delayed:
            raise _Reject(503, None, [("Retry-After", str(math.ceil(delay)))])
        self._delayed += 1

        def answer(result: object) -> NoReturn:
            self._delayed -= 1
            raise reject()

        return deferLater(self._clock, delay).addBoth(answer)

    def _challenge(self, stale: bool = False) -> _Reject:
        return _Reject(
            401,
            None,
            [("WWW-Authenticate", value) for value in self.authenticator.challenges(stale=stale)],
        )

    # -- responses -----------------------------------------------------------

    def _response(
        self,
        request: Request,
        status: int,
        reason: str | None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        # RFC 3261 §8.2.6.2: a UAS adds a To tag to its responses.
        response = make_response(request, status, reason, to_tag=new_tag())
        for name, value in headers:
            response.headers.add(name, value)
        return response

    def _date(self, now: float) -> str:
        # The Date header's text changes once a second: format it once per
        # second, not once per 200.
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self._date_text = formatdate(second, usegmt=True)
        return self._date_text

    def _ok(
        self, request: Request, source: Source, bindings: Sequence[Binding], now: float
    ) -> Response:
        headers: list[tuple[str, str]] = []
        for binding in bindings:
            value = f"<{binding.contact}>;expires={binding.expires_in(now)}"
            if binding.q is not None:
                value += f";q={binding.q:g}"
            if binding.instance_id is not None:
                value += f";+sip.instance={_quote_param(binding.instance_id)}"
                if binding.reg_id is not None:
                    value += f";reg-id={binding.reg_id}"
            headers.append(("Contact", value))
        # RFC 3261 §10.3 step 8.
        headers.append(("Date", self._date(now)))
        settings = self.settings
        if (
            settings.path != "off"
            and "path" in _option_tags(request, "Supported")
            and settings.accepts_path_from(source.remote_host)
        ):
            # RFC 3327 §5.3: echo the Path of this request, if we stored it.
            headers.extend(("Path", value) for value in request.headers.get_fields("Path"))
        if (
            self._flows is not None
            and source.connection is not None
            and _outbound_flow(request, source)
        ):
            # RFC 5626 §6: the registrar that supports outbound says so with
            # Require; §4.4.1: Flow-Timer, the keep-alive interval we expect
            # (CRLF pings, answered by the transport).  Only on TCP/TLS: we do
            # not answer STUN keep-alives on UDP.
            headers.append(("Require", "outbound"))
            headers.append(("Flow-Timer", str(self._flows.flow_timer)))
        return self._response(request, 200, None, headers)


def settings_from_config(section: RegistrarConfig) -> tuple[RegistrarSettings, ThrottleSettings]:
    """The registrar's and the throttle's settings from the ``[registrar]``
    config section."""
    return (
        RegistrarSettings(
            default_expires=section.default_expires,
            min_expires=section.min_expires,
            max_expires=section.max_expires,
            nonce_lifetime=section.nonce_lifetime,
            nonce_secret=section.nonce_secret,
            purge_interval=section.purge_interval,
            aliases=section.aliases,
            max_delayed=section.max_delayed,
            digest_algorithms=section.digest_algorithms,
            credentials_cache_seconds=section.credentials_cache_seconds,
            path=section.path,
            trusted_proxies=section.trusted_proxies,
            max_contacts=section.max_contacts,
        ),
        ThrottleSettings(
            free_failures=section.auth_free_failures,
            base_delay=section.auth_base_delay,
            max_delay=section.auth_max_delay,
            refuse_after=section.auth_refuse_after,
            refuse_seconds=section.auth_refuse_seconds,
            forget_after=section.auth_forget_after,
            max_entries=section.auth_max_tracked,
            trust_seconds=section.auth_trust_seconds,
        ),
    )


@frozen
class _Contact:
    """A Contact of the request: the lifetime asked for and the change."""

    requested: int
    change: ContactChange
