"""
The ``clicktodial`` administration command: ``clicktodial [--config FILE] COMMAND ...``.

Commands are argparse sub-commands. The built-in ones are here; other modules add theirs by
being listed in :data:`COMMAND_MODULES` and exposing ``add_parser(subparsers)``, which adds a
sub-parser and sets its ``run`` default to a function ``(args) -> exit status``::

    def add_parser(subparsers: Subparsers) -> None:
        parser = subparsers.add_parser("db", help="...")
        parser.set_defaults(run=run_db)

    def run_db(args: argparse.Namespace) -> int:
        config = config_from_args(args)
        ...
        return 0

Exit status: 0 success, 1 the command failed, 2 usage or configuration error.
"""

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TypeAlias

from clicktodial import __version__
from clicktodial.config import Config, ConfigError, load_config

__all__ = [
    "COMMAND_MODULES",
    "CONFIG_ENVIRONMENT_VARIABLE",
    "CommandError",
    "Subparsers",
    "build_parser",
    "config_from_args",
    "main",
]

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

#: Modules that add sub-commands: each exposes ``add_parser(subparsers: Subparsers) -> None``.
COMMAND_MODULES: tuple[str, ...] = ("clicktodial.store.commands",)

#: Default for ``--config`` when the option is not given.
CONFIG_ENVIRONMENT_VARIABLE = "CLICKTODIAL_CONFIG"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """The command cannot run as asked; the message is printed, exit status 2."""


def config_from_args(args: argparse.Namespace) -> Config:
    """
    The configuration named by ``--config`` (or ``$CLICKTODIAL_CONFIG``).

    :raises CommandError: no configuration file was named.
    :raises ConfigError: the file is not valid configuration.
    """
    if not args.config:
        raise CommandError(
            f"--config FILE (or ${CONFIG_ENVIRONMENT_VARIABLE}) is required for this command"
        )
    return load_config(args.config)


def _check_config(args: argparse.Namespace) -> int:
    from twisted.internet.task import Clock

    from clicktodial.pluginconfig import check_plugins
    from clicktodial.startup import load_named_resources
    from clicktodial.store.plugins import StoreEnvironment

    config = config_from_args(args)
    # The daemon's start-up validation: the files and endpoint types the configuration
    # names are loaded and looked up, the plugins check their [KIND:NAME] sections. They
    # are built and dropped, never started: no reactor runs, a clock is all they are given.
    load_named_resources(config)
    environment = StoreEnvironment(reactor=Clock(), realm=config.sip.domain)
    for warning in check_plugins(config, environment):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"OK: {args.config}")
    return EXIT_OK


def _version(args: argparse.Namespace) -> int:
    print(f"clicktodial {__version__}")
    return EXIT_OK


def _add_builtin_commands(subparsers: Subparsers) -> None:
    check = subparsers.add_parser(
        "check-config",
        help="validate the configuration file",
        description="Load the configuration and check every plugin's options as start-up"
        " does; print OK, or the problem on one line (exit 2).",
    )
    check.set_defaults(run=_check_config)
    version = subparsers.add_parser("version", help="print the version")
    version.set_defaults(run=_version)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command: the built-in ones and :data:`COMMAND_MODULES`'."""
    parser = argparse.ArgumentParser(
        prog="clicktodial",
        description="Administer the clicktodial daemon (run the daemon with twistd clicktodial).",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get(CONFIG_ENVIRONMENT_VARIABLE),
        help=f"INI configuration file (default: ${CONFIG_ENVIRONMENT_VARIABLE})",
    )
    parser.add_argument("--version", action="version", version=f"clicktodial {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_builtin_commands(subparsers)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    except CommandError as e:
        print(f"clicktodial: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return status


if __name__ == "__main__":
    # `python -m clicktodial.cli`: run clicktodial.cli's main, not this __main__ copy's, whose
    # own CommandError class would not catch the one the command modules raise.
    from clicktodial.cli import main as imported_main

    sys.exit(imported_main())
