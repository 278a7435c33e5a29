"""
The ``user``, ``token`` and ``db`` sub-commands of ``clicktodial`` (see :mod:`clicktodial.cli`).

Each opens the store the configuration names, runs one function of
:mod:`clicktodial.store.admin`, prints the outcome and closes the store, on Twisted's reactor
(:func:`clicktodial.store.blocking.run_with_reactor`, i.e. ``task.react``). Store errors are
printed on one line with exit status 1.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.task import Clock

from clicktodial.cli import CommandError, Subparsers, config_from_args
from clicktodial.config import Config
from clicktodial.interfaces import (
    ILocationBackend,
    ILocationStore,
    ISchemaManagement,
    IStoreBackend,
)
from clicktodial.pluginconfig import build_location_store, build_store
from clicktodial.store import admin
from clicktodial.store.blocking import run_with_reactor
from clicktodial.store.errors import StoreError
from clicktodial.store.plugins import StoreEnvironment

EXIT_OK = 0
EXIT_FAILED = 1


#: What a store command gets: the reactor (for the time), the store, and where registrations
#: live (the store itself unless [location] names another backend).
StoreCommand = Callable[[argparse.Namespace, Any, IStoreBackend, ILocationStore], Awaitable[int]]


def _run_with_store(args: argparse.Namespace, command: StoreCommand) -> int:
    config = config_from_args(args)

    async def main(reactor: Any) -> int:
        environment = StoreEnvironment(reactor=reactor, realm=config.sip.domain)
        # The daemon's stores: [store], and [location] when registrations live elsewhere.
        store = build_store(config, environment)
        location = build_location_store(config, environment)
        started: list[IStoreBackend | ILocationBackend] = []
        try:
            for backend in (store, location):
                if backend is not None:
                    started.append(backend)
                    await backend.start()
            return await command(args, reactor, store,
                                 location if location is not None else store)
        except StoreError as e:
            print(f"clicktodial: {e}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            for backend in reversed(started):
                await backend.stop()

    return run_with_reactor(main)


def _store_command(command: StoreCommand) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return _run_with_store(args, command)
    return run


# -- user ---------------------------------------------------------------------------------


async def _user_add(args: argparse.Namespace, reactor: Any, store: IStoreBackend,
                    locations: ILocationStore) -> int:
    added = await admin.add_user(
        store, args.name, password=args.password, sip_password=args.sip_password,
        display_name=args.display_name, is_admin=args.admin)
    print(f"added user {added.user.username}")
    if added.generated_sip_password is not None:
        print(f"SIP password (shown once): {added.generated_sip_password}")
    if not added.user.has_password:
        print("no web password: set one with `clicktodial user passwd"
              f" {added.user.username}` before this user can log in")
    return EXIT_OK


async def _user_list(args: argparse.Namespace, reactor: Any, store: IStoreBackend,
                     locations: ILocationStore) -> int:
    now = reactor.seconds()
    listings = await admin.list_users(store, now, locations)
    for listing in listings:
        user = listing.user
        flags = [name for name, on in (
            ("admin", user.is_admin), ("disabled", user.disabled),
            ("no-web-password", not user.has_password),
            ("no-sip-password", not user.has_sip_credentials)) if on]
        name = f" ({user.display_name})" if user.display_name else ""
        extra = f" [{', '.join(flags)}]" if flags else ""
        print(f"{user.username}{name}{extra}")
        for binding in listing.bindings:
            agent = f" {binding.user_agent}" if binding.user_agent else ""
            print(f"    {binding.contact} expires in {binding.expires_in(now)}s{agent}")
        if not listing.bindings:
            print("    (not registered)")
    print(f"{len(listings)} user(s)")
    return EXIT_OK


def _prompt_password() -> str:
    if not sys.stdin.isatty():
        raise CommandError("give --password or --sip-password (no terminal to prompt on)")
    first = getpass.getpass("New web password: ")
    if first != getpass.getpass("Again: "):
        raise CommandError("the passwords differ")
    if not first:
        raise CommandError("empty password")
    return first


async def _user_passwd(args: argparse.Namespace, reactor: Any, store: IStoreBackend,
                       locations: ILocationStore) -> int:
    password = args.password
    if password is None and args.sip_password is None:
        password = _prompt_password()
    await admin.change_passwords(store, args.name, password, args.sip_password)
    changed = [what for what, value in (("web password", password),
                                        ("SIP password", args.sip_password)) if value]
    print(f"changed the {' and '.join(changed)} of {args.name}")
    return EXIT_OK


async def _user_remove(args: argparse.Namespace, reactor: Any, store: IStoreBackend,
                       locations: ILocationStore) -> int:
    bindings = await admin.remove_user(store, args.name, reactor.seconds(), locations)
    print(f"removed user {args.name} and {bindings} registration(s)")
    return EXIT_OK


async def _user_import(args: argparse.Namespace, reactor: Any, store: IStoreBackend,
                       locations: ILocationStore) -> int:
    started = time.monotonic()
    result = await admin.import_users_csv(store, args.file)
    elapsed = time.monotonic() - started
    rate = result.users / elapsed if elapsed > 0 else float("inf")
    print(f"imported {result.users} user(s), {result.with_password} with a web password,"
          f" in {elapsed:.1f}s ({rate:.0f} users/s)")
    return EXIT_OK


# -- token --------------------------------------------------------------------------------


async def _token_create(args: argparse.Namespace, reactor: Any, store: IStoreBackend,
                        locations: ILocationStore) -> int:
    token = await admin.create_token(store, args.name, args.label)
    print(token)
    return EXIT_OK


async def _token_list(args: argparse.Namespace, reactor: Any, store: IStoreBackend,
                      locations: ILocationStore) -> int:
    for token in await store.list_tokens(args.name):
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(token.created_at))
        print(f"{token.token_id}  {created}  {token.label}")
    return EXIT_OK


async def _token_revoke(args: argparse.Namespace, reactor: Any, store: IStoreBackend,
                        locations: ILocationStore) -> int:
    if await admin.revoke_token(store, args.token):
        print("token revoked")
        return EXIT_OK
    print("clicktodial: no such token", file=sys.stderr)
    return EXIT_FAILED


# -- db -----------------------------------------------------------------------------------


def _schemas(config: Config, environment: StoreEnvironment) -> list[ISchemaManagement]:
    """The schemas of the configured backends ([store], and [location] when separate)."""
    backends = [build_store(config, environment), build_location_store(config, environment)]
    schemas = [schema for schema in (ISchemaManagement(b, None) for b in backends if b)
               if schema is not None]
    if not schemas:
        raise CommandError(f"the {config.store.backend!r} store backend has no schema to"
                           " manage")
    return schemas


def _schema_command(apply: Callable[[ISchemaManagement], None],
                    ) -> Callable[[argparse.Namespace], int]:
    """
    A ``db`` command: ``apply`` (blocking) to each schema. The stores are built and
    dropped, never started: no reactor runs, a clock is all they are given.
    """
    def run(args: argparse.Namespace) -> int:
        config = config_from_args(args)
        environment = StoreEnvironment(reactor=Clock(), realm=config.sip.domain)
        try:
            for schema in _schemas(config, environment):
                apply(schema)
        except StoreError as e:
            print(f"clicktodial: {e}", file=sys.stderr)
            return EXIT_FAILED
        print("database schema is up to date")
        return EXIT_OK
    return run


def add_parser(subparsers: Subparsers) -> None:
    """Add the ``user``, ``token`` and ``db`` commands."""
    user = subparsers.add_parser("user", help="manage users").add_subparsers(
        title="user commands", metavar="COMMAND", required=True)

    add = user.add_parser("add", help="add a user",
                          description="Add a user. Without --sip-password a random SIP"
                          " password is generated and printed once.")
    add.add_argument("name", help="username: 1-64 of a-z 0-9 . _ -")
    add.add_argument("--password", help="web password (none: cannot log in until set)")
    add.add_argument("--sip-password", help="SIP (phone) password")
    add.add_argument("--display-name", default="", help="name shown in the directory")
    add.add_argument("--admin", action="store_true", help="make the user an administrator")
    add.set_defaults(run=_store_command(_user_add))

    listing = user.add_parser("list", help="list users and their registered phones")
    listing.set_defaults(run=_store_command(_user_list))

    passwd = user.add_parser("passwd", help="change a user's passwords",
                             description="Change the web and/or SIP password; with neither"
                             " option, prompt for a new web password.")
    passwd.add_argument("name")
    passwd.add_argument("--password", help="new web password")
    passwd.add_argument("--sip-password", help="new SIP password")
    passwd.set_defaults(run=_store_command(_user_passwd))

    remove = user.add_parser("remove", help="remove a user and their API tokens")
    remove.add_argument("name")
    remove.set_defaults(run=_store_command(_user_remove))

    importing = user.add_parser(
        "import", help="add users from a CSV file",
        description="Add users from CSV rows username,sip_password[,password[,display_name]]"
        " (header row optional). Any bad row or existing user: nothing is imported.")
    importing.add_argument("file", help="CSV file (UTF-8)")
    importing.set_defaults(run=_store_command(_user_import))

    token = subparsers.add_parser("token", help="manage API tokens").add_subparsers(
        title="token commands", metavar="COMMAND", required=True)
    create = token.add_parser("create", help="create an API token and print it (once)")
    create.add_argument("name", help="the user the token acts as")
    create.add_argument("--label", default="", help="what the token is for")
    create.set_defaults(run=_store_command(_token_create))
    tokens = token.add_parser("list", help="list a user's tokens (ids, not the tokens)")
    tokens.add_argument("name")
    tokens.set_defaults(run=_store_command(_token_list))
    revoke = token.add_parser("revoke", help="revoke a token, by the token or its id")
    revoke.add_argument("token")
    revoke.set_defaults(run=_store_command(_token_revoke))

    db = subparsers.add_parser("db", help="manage the SQL database schema").add_subparsers(
        title="db commands", metavar="COMMAND", required=True)
    upgrade = db.add_parser("upgrade", help="create or migrate the schema to this version")
    upgrade.set_defaults(run=_schema_command(lambda schema: schema.upgrade_schema()))
    check = db.add_parser("check", help="exit 1 unless the schema is up to date")
    check.set_defaults(run=_schema_command(lambda schema: schema.check_schema()))
