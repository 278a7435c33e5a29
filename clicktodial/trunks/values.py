"""
The plain values crossing the trunk interfaces (:class:`~clicktodial.interfaces.ITrunk`,
:class:`~clicktodial.interfaces.ITrunkRegistry`): states, statuses, caller identities.
"""

from __future__ import annotations

import enum

import attrs

__all__ = [
    "CallerIdentity",
    "Reachability",
    "RegistrationState",
    "RegistrationStatus",
    "TrunkBusy",
    "TrunkStatus",
]


class RegistrationState(enum.StrEnum):
    """
    Where our registration with the provider stands.

    :cvar OFF: ``register = no``: we do not register.
    :cvar REGISTERING: the first REGISTER is under way (or waits for DNS).
    :cvar REGISTERED: the provider accepted it; it is refreshed before it expires.
    :cvar FAILED: the last attempt failed (the reason says why); retried with backoff.
    """

    OFF = "off"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"


@attrs.frozen
class RegistrationStatus:
    """
    :ivar reason: why the last attempt failed (``FAILED``), else ``None``.
    :ivar expires_at: when the binding the provider granted ends (clock seconds), if any.
    :ivar failures: attempts that failed in a row.
    """

    state: RegistrationState
    reason: str | None = None
    expires_at: float | None = None
    failures: int = 0


class Reachability(enum.StrEnum):
    """What the OPTIONS keep-alive found: ``off`` when it is not configured."""

    OFF = "off"
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@attrs.frozen
class TrunkStatus:
    """One trunk as the admin page and ``/metrics`` show it."""

    name: str
    proxy: str
    registration: RegistrationStatus
    reachability: Reachability
    active_calls: int
    max_calls: int
    max_cps: float
    #: calls refused by max_calls or max_cps since start
    refused_calls: int
    #: requests arriving from the trunk refused since start
    refused_inbound: int


@attrs.frozen
class CallerIdentity:
    """
    What we present on a call through a trunk.

    :ivar from_uri: the From URI (``sip:+4930123456@provider.example``); the UA adds the tag.
    :ivar asserted_identity: the P-Asserted-Identity value (RFC 3325), in angle brackets.
    """

    from_uri: str
    asserted_identity: str


class TrunkBusy(Exception):
    """
    A call was not admitted: the trunk has ``max_calls`` calls, or started ``max_cps`` calls
    in the last second. ``limit`` names which (``max_calls`` or ``max_cps``).
    """

    def __init__(self, trunk: str, limit: str) -> None:
        super().__init__(f"trunk {trunk}: {limit} reached")
        self.trunk = trunk
        self.limit = limit
