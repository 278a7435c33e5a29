"""
Where the web interface's live updates come from.

:class:`RegistrationMonitor` tells listeners when a user's phone registers, unregisters or
expires. The registrar of this daemon tells it about every REGISTER it handles
(:meth:`RegistrationMonitor.bindings_changed`, with the bindings it has in hand: no extra
read), so those reach the event streams at once. It also reads the location store every
``interval`` seconds while anyone listens, for what no REGISTER here announces: bindings that
expire, and registrations made through another daemon sharing the database.
:meth:`RegistrationMonitor.poke` reads at once.
Call state changes come from the call controller (``ICallController.subscribe``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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

    Two sources: :meth:`bindings_changed` (the registrar, after each REGISTER it handled)
    and a read of the whole location store every ``interval`` seconds while listened to (the
    fallback for expiries and other daemons' registrations).

    :param interval: seconds between two reads of the location store while listened to
        (``[web] presence_poll_interval``).
    """

    def __init__(
        self, clock: IReactorTime, locations: ILocationStore, domain: str, interval: float
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
        #: registrations announced while a read was in progress: newer than what it may return
        self._announced: dict[str, Registration] = {}

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

    def bindings_changed(self, aor: str, bindings: Sequence[Binding]) -> None:
        """
        ``aor``'s unexpired bindings are now ``bindings`` (a REGISTER handled here): tell the
        listeners at once if its set of contacts changed. AORs of other domains are ignored.
        """
        if not self._listeners or not aor.lower().endswith("@" + self.domain.lower()):
            return
        user = aor_user_part(aor)
        new = Registration(user, tuple(Contact(b.contact, b.expires_at) for b in bindings))
        if self._polling or self._known is None:
            # A read in progress may have started before this REGISTER: when it completes,
            # this registration overrides what it found.
            self._announced[user] = new
            return
        old = self._known.get(user, Registration(user))
        self._set_known(new)
        self._publish(old, new)

    def aor_changed(self, aor: str) -> None:
        """
        ``aor``'s bindings changed somewhere (the location store's
        ``IBindingChangeNotifier``: another daemon sharing it, or an expiry): read them and
        tell the listeners at once if its set of contacts changed.
        """
        if not self._listeners or not aor.lower().endswith("@" + self.domain.lower()):
            return
        d = self.locations.get_bindings(aor, self.clock.seconds())
        d.addCallbacks(
            lambda bindings: self.bindings_changed(aor, bindings),
            lambda failure: log.failure("cannot read the bindings of {aor}", failure, aor=aor),
        )

    def poke(self) -> None:
        """Read the location store now."""
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
        self._announced.clear()

    def _set_known(self, registration: Registration) -> None:
        assert self._known is not None
        if registration.registered:
            self._known[registration.username] = registration
        else:
            self._known.pop(registration.username, None)

    def _compare(self, now: dict[str, Registration]) -> None:
        before, self._known = self._known, now
        announced, self._announced = self._announced, {}
        for registration in announced.values():
            self._set_known(registration)
        if before is None:
            return
        for user in sorted(set(before) | set(self._known)):
            self._publish(
                before.get(user, Registration(user)), self._known.get(user, Registration(user))
            )

    def _publish(self, old: Registration, new: Registration) -> None:
        """Tell the listeners about ``new`` if its set of contacts differs from ``old``'s."""
        if {c.uri for c in old.contacts} == {c.uri for c in new.contacts}:
            return
        for listener in list(self._listeners):
            try:
                listener(new)
            except Exception:
                log.failure("registration listener failed", aor=new.username)

    def _failed(self, failure: Failure) -> None:
        log.failure("cannot read registrations", failure)
        # What the registrar announced meanwhile is still news (before the first read,
        # there is nothing to compare it with: the next read establishes the state).
        announced, self._announced = self._announced, {}
        if self._known is not None:
            for new in announced.values():
                old = self._known.get(new.username, Registration(new.username))
                self._set_known(new)
                self._publish(old, new)

    def _polled(self, _: object) -> None:
        self._polling = False
        if not self._listeners:
            self._known = None
            self._announced.clear()
            return
        if self._again:
            self._again = False
            self.poke()
            return
        self._timer = self.clock.callLater(self.interval, self.poke)
