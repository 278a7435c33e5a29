"""
Exceptions raised (as Deferred failures) by the store interfaces.

Every store failure a caller is expected to handle derives from
:class:`StoreError`; anything else coming out of a store is a bug.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from clicktodial.errors import PluginConfigError


class StoreError(Exception):
    """Base class of the errors the store interfaces document."""


class InvalidUsername(StoreError, ValueError):
    """
    A username is not usable as a SIP user part.

    Usernames match ``[a-z0-9._-]{1,64}``: safe in a SIP URI user part
    (RFC 3261 §25.1 ``unreserved``) without escaping, and case-folded so
    that ``Alice`` and ``alice`` cannot be two accounts.
    """

    def __init__(self, username: str) -> None:
        super().__init__(
            f"invalid username {username!r}: use 1 to 64 characters of a-z, 0-9, '.', '_' or '-'"
        )
        self.username = username


class UserExists(StoreError):
    """One or more users to be added already exist; nothing was added."""

    def __init__(self, usernames: Iterable[str]) -> None:
        self.usernames = tuple(sorted(usernames))
        super().__init__("user already exists: " + ", ".join(self.usernames))


class NoSuchUser(StoreError, LookupError):
    """The named user does not exist."""

    def __init__(self, username: str) -> None:
        super().__init__(f"no such user: {username!r}")
        self.username = username


class NoSuchCall(StoreError, LookupError):
    """The call record id is unknown."""

    def __init__(self, call_id: str) -> None:
        super().__init__(f"no such call: {call_id!r}")
        self.call_id = call_id


class OutOfOrderRegistration(StoreError):
    """
    A REGISTER reuses a binding's Call-ID with a CSeq that is not higher
    than the stored one (RFC 3261 §10.3 step 7): the request is stale or a
    replay, and none of its changes were applied.
    """

    def __init__(self, aor: str, contact: str, call_id: str, cseq: int, stored_cseq: int) -> None:
        super().__init__(
            f"out-of-order REGISTER for {aor}: contact {contact} has"
            f" CSeq {stored_cseq} for Call-ID {call_id}, request has {cseq}"
        )
        self.aor = aor
        self.contact = contact
        self.call_id = call_id
        self.cseq = cseq
        self.stored_cseq = stored_cseq


class TooManyBindings(StoreError):
    """
    A REGISTER would add bindings beyond the most an AOR may have
    (:attr:`~clicktodial.store.values.BindingChanges.max_bindings`, the registrar's
    ``max_contacts``); none of its changes were applied.
    """

    def __init__(self, aor: str, count: int, limit: int) -> None:
        super().__init__(
            f"REGISTER for {aor} would leave {count} bindings; at most {limit} are allowed"
        )
        self.aor = aor
        self.count = count
        self.limit = limit


class StoreUnavailable(StoreError):
    """
    The backing database could not be reached (after retrying transient
    errors). The operation may be retried later.
    """


class SchemaOutOfDate(StoreError):
    """The database schema is not at the revision this code expects."""


class StoreConfigError(StoreError, PluginConfigError):
    """
    A store or location backend's option (a key of its ``[store:NAME]`` or
    ``[location:NAME]`` section) is missing or invalid.

    :ivar key: the offending key, or ``None``.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        PluginConfigError.__init__(self, message, key)


class UnknownBackend(StoreConfigError):
    """No store backend is registered under the configured name."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        super().__init__(
            f"unknown store backend {name!r}; available backends: " + ", ".join(sorted(available)),
            key="backend",
        )
        self.name = name
        self.available = tuple(sorted(available))


class CsvImportError(StoreError, ValueError):
    """
    A user CSV file has bad rows; nothing was imported.

    :ivar problems: ``(line_number, message)`` pairs, in file order.
    """

    def __init__(self, problems: Sequence[tuple[int, str]]) -> None:
        self.problems = tuple(problems)
        lines = [f"line {line}: {message}" for line, message in self.problems]
        super().__init__(f"{len(self.problems)} bad row(s), nothing imported:\n" + "\n".join(lines))
