"""run_with_reactor: admin commands run their store work on the reactor with task.react."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from clicktodial.store.blocking import run_with_reactor


class InterruptedReactor(MemoryReactorClock):
    """Runs the when-running hooks, then shuts down as a SIGINT would: the "before
    shutdown" triggers run first."""

    def run(self) -> None:
        self.running = self.hasRun = True
        for f, args, kwargs in self.whenRunningHooks:
            f(*args, **kwargs)
        for f, args, kwargs in self.triggers.get("before", {}).get("shutdown", []):
            f(*args, **kwargs)
        self.stop()


def test_returns_what_the_command_returned() -> None:
    """The command's result comes back (react itself would only exit the process)."""
    reactor = MemoryReactorClock()

    async def command(given: Any) -> int:
        assert given is reactor
        return 3

    assert run_with_reactor(command, _reactor=reactor) == 3
    assert reactor.hasRun and reactor.hasStopped


def test_raises_what_the_command_raised() -> None:
    """The command's exception is raised to the caller (react would log it and exit 1),
    so the CLI maps it to its exit status as for any command."""
    async def command(reactor: Any) -> int:
        raise KeyError("x")

    with pytest.raises(KeyError):
        run_with_reactor(command, _reactor=MemoryReactorClock())


def test_an_interrupted_command_cleans_up_then_raises_keyboardinterrupt() -> None:
    """A reactor shutdown before the command finished cancels it where it waits (its
    finally blocks run: the stores stop) and raises KeyboardInterrupt."""
    cleaned: list[str] = []

    async def command(reactor: Any) -> int:
        try:
            await Deferred()
        finally:
            cleaned.append("stores stopped")
        return 0

    with pytest.raises(KeyboardInterrupt):
        run_with_reactor(command, _reactor=InterruptedReactor())
    assert cleaned == ["stores stopped"]
