"""
Where the web interface's live updates come from.

:class:`RegistrationMonitor` tells listeners when a user's phone registers, unregisters or
expires. It reads the location store (so it also sees registrations made through another
daemon sharing the database): every ``interval`` seconds while anyone listens, and at once
when :meth:`RegistrationMonitor.poke` is called (e.g. by the registrar after a REGISTER).
Call state changes come from the call controller (``ICallController.subscribe``).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from clicktodial.interfaces import ILocationStore
from clicktodial.store.values import Binding, aor_user_part

__all__ = ["Contact", "Registration", "RegistrationMonitor", "registrations_by_user"]

log = Logger(namespace="clicktodial.web.events")


@attrs.frozen
class Contact:
    """A registered contact of a user: its URI and when it expires (POSIX seconds)."""

    uri: str
    expires_at: float


@attrs.frozen
class Registration:
    """A user's registration state: registered when they have at least one contact."""

    username: str
    contacts: tuple[Contact, ...] = ()

    @classmethod
    def from_bindings(cls, username: str, bindings: list[Binding]) -> Registration:
        """The registration of ``username`` made of its unexpired ``bindings``."""
        return cls(username, tuple(Contact(b.contact, b.expires_at) for b in bindings))

    @property
    def registered(self) -> bool:
        """Whether a phone of the user is registered."""
        return bool(self.contacts)


def registrations_by_user(bindings: list[Binding], domain: str) -> dict[str, Registration]:
    """Group unexpired ``bindings`` of AORs in ``domain`` by user name."""
    contacts: dict[str, list[Contact]] = {}
    suffix = "@" + domain.lower()
    for binding in bindings:
        if not binding.aor.lower().endswith(suffix):
            continue
        user = aor_user_part(binding.aor)
        contacts.setdefault(user, []).append(Contact(binding.contact, binding.expires_at))
    return {user: Registration(user, tuple(found)) for user, found in contacts.items()}


RegistrationListener = Callable[[Registration], None]


class RegistrationMonitor:
    """
    Publishes changes of users' registration state (registered or not, and the set of
    contact URIs; a mere refresh of an expiry is not a change).

    :param interval: seconds between two reads of the location store while listened to.
    """

    def __init__(
        self, clock: IReactorTime, locations: ILocationStore, domain: str, interval: float = 2.0
    ) -> None:
        self.clock = clock
        self.locations = locations
        self.domain = domain
        self.interval = interval
        self._listeners: list[RegistrationListener] = []
        self._known: dict[str, Registration] | None = None
        self._timer: IDelayedCall | None = None
        self._polling = False
        self._again = False

    @property
    def listening(self) -> int:
        """How many listeners there are."""
        return len(self._listeners)

    def subscribe(self, listener: RegistrationListener) -> Callable[[], None]:
        """
        Call ``listener`` with every change from now on (the first read after the first
        listener subscribes establishes the state; it reports nothing).

        :return: the function that unsubscribes it.
        """
        self._listeners.append(listener)
        if self._timer is None and not self._polling:
            self.poke()

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
            if not self._listeners:
                self.stop()

        return unsubscribe

    def current(self) -> Deferred[dict[str, Registration]]:
        """Every user's registration now, by user name (users without one are absent)."""
        now = self.clock.seconds()
        d = self.locations.all_bindings(now)
        return d.addCallback(registrations_by_user, self.domain)

    def poke(self) -> None:
        """Read the location store now (the registrar calls this after a REGISTER)."""
        if not self._listeners:
            return
        if self._polling:
            self._again = True
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._polling = True
        self.current().addCallbacks(self._compare, self._failed).addBoth(self._polled)

    def stop(self) -> None:
        """Stop reading the store (no one listens); the next listener starts afresh."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._known = None

    def _compare(self, now: dict[str, Registration]) -> None:
        before, self._known = self._known, now
        if before is None:
            return
        for user in sorted(set(before) | set(now)):
            old = before.get(user, Registration(user))
            new = now.get(user, Registration(user))
            if {c.uri for c in old.contacts} != {c.uri for c in new.contacts}:
                for listener in list(self._listeners):
                    try:
                        listener(new)
                    except Exception:
                        log.failure("registration listener failed", aor=user)

    def _failed(self, failure: Failure) -> None:
        log.failure("cannot read registrations", failure)

    def _polled(self, _: object) -> None:
        self._polling = False
        if not self._listeners:
            self._known = None
            return
        if self._again:
            self._again = False
            self.poke()
            return
        self._timer = self.clock.callLater(self.interval, self.poke)
