"""
The trunk a call uses (:class:`~clicktodial.interfaces.ITrunk`) and the registry of trunks
by name (:class:`~clicktodial.interfaces.ITrunkRegistry`), built at start-up from the
``[trunk:NAME]`` sections by :func:`build_trunks`.

A :class:`Trunk`'s :attr:`~Trunk.service` holds its registration (``register = yes``) and
its OPTIONS keep-alive (``keepalive_interval`` > 0). The registry is the service holding
every trunk, and the one place that knows which source addresses are a trunk's (for the
inbound guard, :mod:`clicktodial.trunks.inbound`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.config import Config
from clicktodial.interfaces import ITrunk, ITrunkRegistry
from clicktodial.netaddr import ip_of
from clicktodial.sip.address import Destination
from clicktodial.sip.interfaces import IClientCredentials
from clicktodial.sip.ua import TransactionLayerLike
from clicktodial.sip.ua.auth import DigestAnswerer
from clicktodial.sip.uri import URI, parse_uri
from clicktodial.trunks.config import E164_RE, TrunkConfig, trunk_configs
from clicktodial.trunks.keepalive import TrunkKeepAlive
from clicktodial.trunks.limits import CallAdmission, CallTicket
from clicktodial.trunks.registration import TrunkRegistration
from clicktodial.trunks.resolver import ProxyResolver, system_resolver
from clicktodial.trunks.values import (
    CallerIdentity,
    Reachability,
    RegistrationState,
    RegistrationStatus,
    TrunkStatus,
)

__all__ = ["Trunk", "TrunkRegistry", "build_trunks", "trunks_for_daemon"]

log = Logger(namespace="clicktodial.trunks.trunk")


@implementer(ITrunk, IClientCredentials)
class Trunk:
    """
    One ``[trunk:NAME]``: see :class:`~clicktodial.interfaces.ITrunk`.

    :ivar service: the trunk's registration and keep-alive (started by the registry).
    """

    def __init__(self, clock: IReactorTime, name: str, config: TrunkConfig,
                 resolver: ProxyResolver, transactions: TransactionLayerLike, *,
                 user_agent: str | None = None, rng: random.Random | None = None,
                 retry_base: float = 30.0) -> None:
        self.service = MultiService()
        self.service.setName(f"trunk:{name}")
        self.clock = clock
        self.name = name
        self.config = config
        self.resolver = resolver
        self.aor = f"sip:{config.username}@{config.host}"
        self.admission = CallAdmission(clock, name, config.max_calls, config.max_cps)
        self.refused_inbound = 0
        self.registration: TrunkRegistration | None = None
        self.keepalive: TrunkKeepAlive | None = None
        if config.register:
            self.registration = TrunkRegistration(
                clock, transactions, self.destinations, trunk=name, aor=self.aor,
                registrar_uri=f"sip:{config.host}",
                answerer=DigestAnswerer(self),
                expires=config.register_expires, user_agent=user_agent, rng=rng,
                retry_base=retry_base)
            self.registration.setServiceParent(self.service)
        if config.keepalive_interval:
            self.keepalive = TrunkKeepAlive(
                clock, transactions, self.destinations, trunk=name, aor=self.aor,
                target_uri=f"sip:{config.host}", interval=config.keepalive_interval,
                user_agent=user_agent)
            self.keepalive.setServiceParent(self.service)

    # -- ITrunk ------------------------------------------------------------------------

    def request_uri_for(self, e164: str) -> URI:
        if not E164_RE.fullmatch(e164):
            raise ValueError(f"not an E.164 number: {e164!r}")
        return parse_uri(f"sip:{e164}@{self.config.host}")

    def destinations(self) -> Deferred[list[Destination]]:
        return self.resolver.resolve(self.config.proxy)

    def credentials_for(self, realm: str) -> tuple[str, str] | None:
        if self.config.realm is not None and realm != self.config.realm:
            return None
        return (self.config.auth_user, self.config.password)

    def caller_identity(self, username: str | None) -> CallerIdentity:
        number = None
        if username is not None:
            number = self.config.user_caller_ids.get(username)
        if number is None:
            number = self.config.caller_id or self.config.username
        uri = f"sip:{number}@{self.config.host}"
        return CallerIdentity(from_uri=uri, asserted_identity=f"<{uri}>")

    def admit(self) -> CallTicket:
        return self.admission.admit()

    def status(self) -> TrunkStatus:
        registration = (self.registration.status() if self.registration is not None
                        else RegistrationStatus(RegistrationState.OFF))
        reachability = (self.keepalive.reachability if self.keepalive is not None
                        else Reachability.OFF)
        return TrunkStatus(
            name=self.name, proxy=str(self.config.proxy), registration=registration,
            reachability=reachability, active_calls=self.admission.active,
            max_calls=self.config.max_calls, max_cps=self.config.max_cps,
            refused_calls=self.admission.refused, refused_inbound=self.refused_inbound)

    # -- inbound -----------------------------------------------------------------------

    def is_source(self, host: str) -> bool:
        """Whether ``host`` is one of the provider's addresses: its proxy's (as last
        resolved, or given as an IP address) or ``inbound_sources``."""
        address = ip_of(host)
        if address is None:
            return False
        if address.compressed in self.config.inbound_sources:
            return True
        proxy = ip_of(self.config.proxy.host)
        if proxy is not None and proxy == address:
            return True
        return any(ip_of(d.host) == address for d in self.resolver.cached(self.config.proxy))


@implementer(ITrunkRegistry)
class TrunkRegistry(MultiService):
    """Every trunk, by name; starting it starts their registrations and keep-alives."""

    def __init__(self, trunks: Sequence[Trunk]) -> None:
        super().__init__()
        self.setName("trunks")
        self._trunks = {trunk.name: trunk for trunk in trunks}
        for trunk in trunks:
            trunk.service.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        # Resolve every proxy once at start, so the inbound guard knows each provider's
        # addresses even for a trunk that neither registers nor pings.
        for trunk in self._trunks.values():
            trunk.destinations().addErrback(_unresolved, trunk.name)

    def get(self, name: str) -> ITrunk | None:
        return self._trunks.get(name)

    def names(self) -> list[str]:
        return list(self._trunks)

    def statuses(self) -> list[TrunkStatus]:
        return [trunk.status() for trunk in self._trunks.values()]

    def screen_inbound(self, host: str) -> str | None:
        for trunk in self._trunks.values():
            if trunk.config.inbound == "refuse" and trunk.is_source(host):
                trunk.refused_inbound += 1
                return trunk.name
        return None


def _unresolved(failure: Failure, name: str) -> None:
    log.warn("trunk {trunk}: cannot resolve its proxy: {error}", trunk=name,
             error=failure.getErrorMessage())


def build_trunks(clock: IReactorTime, configs: Mapping[str, TrunkConfig],
                 resolver: ProxyResolver, transactions: TransactionLayerLike, *,
                 user_agent: str | None = None) -> TrunkRegistry:
    """The registry of the trunks ``configs`` describe (not started)."""
    return TrunkRegistry([
        Trunk(clock, name, config, resolver, transactions, user_agent=user_agent)
        for name, config in configs.items()
    ])


def trunks_for_daemon(config: Config, reactor: IReactorTime,
                      transactions: TransactionLayerLike,
                      resolver: IResolver | None = None) -> TrunkRegistry | None:
    """
    The trunks of ``config``'s ``[trunk:NAME]`` sections on the daemon's transaction
    layer, resolving names with ``resolver`` (default: the machine's, on ``reactor``);
    ``None`` when there is no such section.

    :raises clicktodial.config.ConfigError: a bad ``[trunk:NAME]`` key.
    """
    configs = trunk_configs(config)
    if not configs:
        return None
    if resolver is None:
        resolver = system_resolver(reactor)
    transports = tuple(t.upper() for t in config.sip.transports)
    return build_trunks(reactor, configs, ProxyResolver(reactor, resolver, transports),
                        transactions, user_agent=config.sip.user_agent)
