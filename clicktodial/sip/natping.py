"""
Server-side NAT keep-alive (``[registrar] nat_keepalive_interval``), as
Kamailio's nathelper and usrloc keep-alives do.

Many phones behind NAT neither re-register nor send keep-alives often
enough to keep their NAT's UDP mapping: once the NAT forgets it, the
daemon's INVITEs to the phone die at the NAT while the phone still looks
registered.  Every ``interval`` seconds, an OPTIONS goes to each UDP binding
registered from behind NAT (its Contact host differs from the address the
REGISTER came from), to that source address: the request, and the phone's
answer, keep the mapping open.  Any response from the phone (even an error)
proves it reachable.  A binding whose phone answers none of
``failures`` pings in a row (Timer F's local 408, or a transport error's
503) is removed from the location store: the phone is shown offline and no
call forks to it, until it registers again.

Bindings that keep their own flow are left alone: RFC 5626 outbound
bindings (instance and reg-id: the phone sends its own keep-alives) and
bindings behind a trusted proxy (a Path).
"""

from __future__ import annotations

import ipaddress

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from clicktodial.interfaces import ILocationStore
from clicktodial.sip.address import Destination
from clicktodial.sip.message import Request, Response, new_call_id, new_tag
from clicktodial.sip.ua import TransactionLayerLike
from clicktodial.sip.uri import parse_uri
from clicktodial.store.values import Binding, BindingChanges, ContactChange

__all__ = ["NatKeepAlive", "behind_nat"]

log = Logger(namespace="clicktodial.sip.natping")


def behind_nat(binding: Binding) -> Destination | None:
    """
    Where to ping ``binding`` if it was registered over UDP from behind NAT
    (its source address is not its Contact's host), else None.
    """
    if not binding.received or binding.path or (binding.instance_id and binding.reg_id):
        return None
    try:
        received = parse_uri(binding.received)
        contact = parse_uri(binding.contact)
        source = ipaddress.ip_address(received.host)
    except ValueError:
        return None
    if (received.params.get("transport") or "udp").lower() != "udp":
        return None
    try:
        same = ipaddress.ip_address(contact.host) == source
    except ValueError:
        same = False  # a host name in the Contact: not the address it came from
    if same and (contact.port or 5060) == (received.port or 5060):
        return None
    return Destination("UDP", source.compressed, received.port or 5060)


class NatKeepAlive(Service):
    """
    Pings the bindings registered from behind NAT (see the module docstring).

    :ivar failures: consecutive unanswered pings, per binding (aor, contact).
    :ivar pings: OPTIONS sent since start; ``removed``: bindings removed.
    """

    def __init__(
        self,
        clock: IReactorTime,
        transactions: TransactionLayerLike,
        locations: ILocationStore,
        *,
        domain: str,
        interval: float,
        max_failures: int,
        user_agent: str | None = None,
    ) -> None:
        self.clock = clock
        self.transactions = transactions
        self.locations = locations
        self.domain = domain
        self.interval = interval
        self.max_failures = max_failures
        self.user_agent = user_agent
        self.failures: dict[tuple[str, str], int] = {}
        self._outstanding: set[tuple[str, str]] = set()
        self.pings = 0
        self.removed = 0
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        loop = LoopingCall(self.ping_all)
        loop.clock = self.clock
        self._loop = loop
        loop.start(self.interval, now=False).addErrback(
            lambda f: log.failure("NAT keep-alive stopped", f)
        )

    def stopService(self) -> None:
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def ping_all(self) -> Deferred[None]:
        """One round: an OPTIONS to every binding behind NAT that has none outstanding."""

        def ping(bindings: list[Binding]) -> None:
            for binding in bindings:
                destination = behind_nat(binding)
                key = (binding.aor, binding.contact)
                if destination is not None and key not in self._outstanding:
                    self._ping(binding, destination, key)

        def failed(failure: Failure) -> None:
            log.failure("NAT keep-alive: cannot read the bindings", failure)

        return self.locations.all_bindings(self.clock.seconds()).addCallbacks(ping, failed)

    def _ping(self, binding: Binding, destination: Destination, key: tuple[str, str]) -> None:
        uri = parse_uri(binding.contact).without_headers()
        fields = [
            ("Max-Forwards", "70"),
            ("From", f"<sip:keepalive@{self.domain}>;tag={new_tag()}"),
            ("To", f"<{binding.aor}>"),
            ("Call-ID", new_call_id()),
            ("CSeq", "1 OPTIONS"),
        ]
        if self.user_agent:
            fields.append(("User-Agent", self.user_agent))
        request = Request("OPTIONS", uri, fields, b"")

        def answered(response: Response) -> None:
            if response.status < 200:
                return
            self._outstanding.discard(key)
            # RFC 4320: a non-INVITE server never sends 408; 408 and 503 are ours (Timer F,
            # a transport error).
            if response.status not in (408, 503):
                self.failures.pop(key, None)
                return
            count = self.failures.get(key, 0) + 1
            self.failures[key] = count
            log.info(
                "NAT keep-alive: {aor} {contact} did not answer ({count} of {most})",
                aor=binding.aor,
                contact=binding.contact,
                count=count,
                most=self.max_failures,
            )
            if count >= self.max_failures:
                self._remove(binding, key)

        self._outstanding.add(key)
        self.pings += 1
        try:
            self.transactions.send_request(request, destination, answered)
        except (OSError, ValueError) as e:
            self._outstanding.discard(key)
            log.warn("NAT keep-alive to {peer} failed: {error}", peer=str(destination), error=e)

    def _remove(self, binding: Binding, key: tuple[str, str]) -> None:
        self.failures.pop(key, None)
        self.removed += 1
        log.info(
            "NAT keep-alive: removing {aor} {contact}: its phone stopped answering",
            aor=binding.aor,
            contact=binding.contact,
        )
        # The registrar's own matching key for the contact (clicktodial.sip.registrar).
        from clicktodial.sip.registrar import contact_key

        changes = BindingChanges(
            call_id=binding.call_id,
            cseq=binding.cseq + 1,
            contacts=(
                ContactChange(
                    binding.contact,
                    0,
                    instance_id=binding.instance_id,
                    reg_id=binding.reg_id,
                    key=contact_key(parse_uri(binding.contact)),
                ),
            ),
        )
        self.locations.update_bindings(binding.aor, changes, self.clock.seconds()).addErrback(
            lambda f: log.failure("NAT keep-alive: cannot remove {aor}", f, aor=binding.aor)
        )
