"""
A trunk's call limits: at most ``max_calls`` calls at once and ``max_cps`` new calls per
second, as one admit/release step.

Toll fraud is measured in calls per minute: these caps bound what a stolen web session or
a bug can cost. Admission runs on the reactor thread and checks and takes both limits in
one method without yielding, so two calls can never both take the last place; a
:class:`CallTicket` gives its place back once, however many times it is released.

The rate is a token bucket on the injected clock: ``max_cps`` tokens a second, holding at
most ``max(1, max_cps)`` (so ``max_cps = 0.5`` allows one call every two seconds, and no
burst larger than one second's worth).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from clicktodial.trunks.values import TrunkBusy

__all__ = ["CallAdmission", "CallTicket"]


class CallTicket:
    """One admitted call's place; :meth:`release` when the call ends (idempotent)."""

    def __init__(self, admission: CallAdmission) -> None:
        self._admission: CallAdmission | None = admission

    @property
    def released(self) -> bool:
        return self._admission is None

    def release(self) -> None:
        """Give the place back (a second call does nothing)."""
        admission, self._admission = self._admission, None
        if admission is not None:
            admission.give_back()


class CallAdmission:
    """
    :ivar active: calls admitted and not released.
    :ivar refused: admissions refused since start.
    """

    def __init__(self, clock: IReactorTime, trunk: str, max_calls: int, max_cps: float) -> None:
        if max_calls < 1 or not max_cps > 0:
            raise ValueError("max_calls must be at least 1 and max_cps above 0")
        self.clock = clock
        self.trunk = trunk
        self.max_calls = max_calls
        self.max_cps = max_cps
        self._capacity = max(1.0, max_cps)
        self._tokens = self._capacity
        self._updated = clock.seconds()
        self.active = 0
        self.refused = 0

    def admit(self) -> CallTicket:
        """
        Take a place for a new call.

        :raises TrunkBusy: ``max_calls`` calls are up, or the rate is spent.
        """
        now = self.clock.seconds()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._capacity, self._tokens + elapsed * self.max_cps)
        self._updated = now
        if self.active >= self.max_calls:
            self.refused += 1
            raise TrunkBusy(self.trunk, "max_calls")
        if self._tokens < 1.0:
            self.refused += 1
            raise TrunkBusy(self.trunk, "max_cps")
        self._tokens -= 1.0
        self.active += 1
        return CallTicket(self)

    def give_back(self) -> None:
        """One admitted call ended (its :class:`CallTicket` calls this, once)."""
        self.active = max(0, self.active - 1)
