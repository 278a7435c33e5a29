"""
Administration of users, tokens and the database schema, as plain functions.

The ``clicktodial user ...``, ``token ...`` and ``db ...`` commands
(:mod:`clicktodial.store.commands`) are thin wrappers around these; the development
configuration calls :func:`seed_demo_users`. Functions that use a store return Deferreds.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen
from sqlalchemy import URL
from twisted.internet.defer import Deferred

from clicktodial.interfaces import ILocationStore, IStoreBackend, IUserStore
from clicktodial.store.errors import CsvImportError, UserExists
from clicktodial.store.passwords import generate_sip_secret
from clicktodial.store.sql import check_schema, upgrade_schema
from clicktodial.store.values import (
    Binding,
    NewUser,
    User,
    UserChanges,
    aor_user_part,
    is_valid_username,
)

#: The optional header row of a user CSV file, and its column order.
CSV_COLUMNS = ("username", "sip_password", "password", "display_name")

#: Users :func:`seed_demo_users` creates: username, web password, SIP password, display name.
DEMO_USERS = (
    ("alice", "alice", "alice", "Alice"),
    ("bob", "bob", "bob", "Bob"),
)


@frozen
class AddedUser:
    """
    The outcome of :func:`add_user`.

    :ivar generated_sip_password: the SIP secret generated because none was given: show it
        once, it is not stored anywhere in plaintext.
    """

    user: User
    generated_sip_password: str | None = None


@frozen
class UserListing:
    """A user and the bindings currently registered for them."""

    user: User
    bindings: tuple[Binding, ...]


@frozen
class ImportResult:
    """What :func:`import_users_csv` created."""

    users: int
    with_password: int


def add_user(
    store: IUserStore,
    username: str,
    password: str | None = None,
    sip_password: str | None = None,
    display_name: str = "",
    is_admin: bool = False,
) -> Deferred[AddedUser]:
    """
    ``user add``: create a user. Without ``sip_password`` a long random SIP secret is
    generated and returned in :attr:`AddedUser.generated_sip_password`.

    :returns: fires with :class:`AddedUser`; fails like :meth:`IUserStore.add_user`.
    """
    generated = generate_sip_secret() if sip_password is None else None
    return store.add_user(
        username,
        password=password,
        sip_password=sip_password or generated,
        display_name=display_name,
        is_admin=is_admin,
    ).addCallback(lambda user: AddedUser(user, generated))


def list_users(
    store: IStoreBackend, now: float, locations: ILocationStore | None = None
) -> Deferred[list[UserListing]]:
    """
    ``user list``: every user with their unexpired bindings at ``now`` (in ``locations``, by
    default ``store``). A binding belongs to the user whose name is its AOR's user part.
    """
    bindings_from = locations if locations is not None else store

    async def listing() -> list[UserListing]:
        users = await store.list_users()
        by_user: dict[str, list[Binding]] = {}
        for binding in await bindings_from.all_bindings(now):
            by_user.setdefault(aor_user_part(binding.aor), []).append(binding)
        return [UserListing(user, tuple(by_user.get(user.username, ()))) for user in users]

    return Deferred.fromCoroutine(listing())


def change_passwords(
    store: IUserStore, username: str, password: str | None = None, sip_password: str | None = None
) -> Deferred[User]:
    """
    ``user passwd``: set a new web password and/or SIP secret.

    :returns: fires with the updated user; fails with ``NoSuchUser``.
    """
    if password is None and sip_password is None:
        raise ValueError("give a new password, a new SIP password or both")
    return store.update_user(username, UserChanges(password=password, sip_password=sip_password))


def remove_user(
    store: IStoreBackend, username: str, now: float, locations: ILocationStore | None = None
) -> Deferred[int]:
    """
    ``user remove``: delete a user, their tokens and the bindings of their AOR(s) (AORs whose
    user part is the username; in ``locations``, by default ``store``), so their phones stop
    being reachable at once.

    :returns: fires with the number of bindings removed; fails with ``NoSuchUser``.
    """
    bindings_in = locations if locations is not None else store

    async def remove() -> int:
        await store.remove_user(username)
        removed = 0
        for aor in await bindings_in.registered_aors(now):
            if aor_user_part(aor) == username:
                removed += await bindings_in.remove_all(aor)
        return removed

    return Deferred.fromCoroutine(remove())


def create_token(store: IUserStore, username: str, label: str = "") -> Deferred[str]:
    """``token create``: fires with the new token (shown once); fails with ``NoSuchUser``."""
    return store.create_token(username, label)


def revoke_token(store: IUserStore, token: str) -> Deferred[bool]:
    """``token revoke``: by plaintext or id; fires with whether a token was revoked."""
    return store.revoke_token(token)


def parse_users_csv(lines: Iterable[str]) -> list[NewUser]:
    """
    Read users from CSV text: ``username,sip_password[,password[,display_name]]`` per row, an
    optional header row naming those columns, blank lines ignored. An empty ``password``
    means none: such a user cannot log in to the web interface until one is set.

    :raises CsvImportError: listing every bad row by line number (bad username, missing SIP
        password, wrong number of columns, a username repeated).
    """
    problems: list[tuple[int, str]] = []
    users: list[NewUser] = []
    first_line: dict[str, int] = {}
    first_row = True
    reader = csv.reader(lines, strict=True)
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            cells = [cell.strip() for cell in row]
            if first_row:
                first_row = False
                if cells[0].lower() == "username":
                    if tuple(c.lower() for c in cells) != CSV_COLUMNS[: len(cells)]:
                        problems.append(
                            (
                                line,
                                "header must be "
                                + ",".join(CSV_COLUMNS)
                                + " (the last two columns optional)",
                            )
                        )
                    continue
            if not 2 <= len(cells) <= 4:
                problems.append((line, f"expected 2 to 4 columns, found {len(cells)}"))
                continue
            username, sip_password = cells[0], cells[1]
            password = cells[2] if len(cells) > 2 and cells[2] else None
            display_name = cells[3] if len(cells) > 3 else ""
            if not is_valid_username(username):
                problems.append(
                    (
                        line,
                        f"invalid username {username!r}: use 1 to 64"
                        " characters of a-z, 0-9, '.', '_' or '-'",
                    )
                )
            elif username in first_line:
                problems.append(
                    (line, f"username {username!r} already on line {first_line[username]}")
                )
            else:
                first_line[username] = line
            if not sip_password:
                problems.append((line, "missing SIP password"))
            users.append(
                NewUser(
                    username=username,
                    password=password,
                    sip_password=sip_password,
                    display_name=display_name,
                )
            )
    except csv.Error as e:
        problems.append((reader.line_num, f"not valid CSV: {e}"))
    if problems:
        raise CsvImportError(problems)
    return users


def import_users(store: IUserStore, users: Sequence[NewUser]) -> Deferred[ImportResult]:
    """
    Create ``users`` in one atomic batch (web passwords hashed in parallel on the store's
    hashing pool). Fails with ``UserExists`` naming users that already exist; nothing is
    imported then.
    """
    return store.add_users(users).addCallback(
        lambda count: ImportResult(
            users=count, with_password=sum(1 for u in users if u.password is not None)
        )
    )


def import_users_csv(store: IUserStore, path: str | Path) -> Deferred[ImportResult]:
    """
    ``user import FILE.csv``: :func:`parse_users_csv` then :func:`import_users`.

    :returns: fires with :class:`ImportResult`; fails with :class:`CsvImportError` (bad
        rows, or users that already exist, by line number) and imports nothing then.
    """
    text = Path(path).read_text(encoding="utf-8-sig")
    users = parse_users_csv(io.StringIO(text, newline=""))

    def existing_users_by_line(failure: Any) -> Any:
        failure.trap(UserExists)
        lines = _line_numbers(text)
        raise CsvImportError(
            sorted(
                (lines.get(name, 0), f"user {name!r} already exists")
                for name in failure.value.usernames
            )
        )

    return import_users(store, users).addErrback(existing_users_by_line)


def _line_numbers(text: str) -> dict[str, int]:
    reader = csv.reader(io.StringIO(text, newline=""))
    return {row[0].strip(): reader.line_num for row in reader if row}


def seed_demo_users(store: IUserStore) -> Deferred[list[str]]:
    """
    Create the demo users of the development configuration, ``alice`` and ``bob`` (web and
    SIP password equal to the username), unless they exist.

    :returns: fires with the usernames created (empty if both existed).
    """

    async def seed() -> list[str]:
        created = []
        for username, password, sip_password, display_name in DEMO_USERS:
            if await store.get_user(username) is None:
                await store.add_user(
                    username,
                    password=password,
                    sip_password=sip_password,
                    display_name=display_name,
                )
                created.append(username)
        return created

    return Deferred.fromCoroutine(seed())


def db_upgrade(url: str | URL) -> None:
    """``db upgrade``: apply pending schema migrations to the SQL database (blocking)."""
    upgrade_schema(url)


def db_check(url: str | URL) -> None:
    """``db check``: raise ``SchemaOutOfDate`` unless the schema is current (blocking)."""
    check_schema(url)
