"""BlockingDriver: what lets admin commands wait for store Deferreds without a reactor."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from clicktodial.store.blocking import BlockingDriver


def test_runs_calls_from_threads_until_fired() -> None:
    """Calls queued with callFromThread run in wait(), which returns the result."""
    driver = BlockingDriver()
    d: Deferred[int] = Deferred()
    driver.callFromThread(d.callback, 42)
    assert driver.wait(d) == 42


def test_runs_timers() -> None:
    """Timers scheduled on the driver (retry back-off) fire while waiting."""
    driver = BlockingDriver()
    assert driver.wait(deferLater(driver, 0.01, lambda: "later")) == "later"


def test_raises_the_failure() -> None:
    """A failed Deferred makes wait() raise its exception."""
    driver = BlockingDriver()
    with pytest.raises(KeyError):
        driver.wait(Deferred.fromCoroutine(_fail()))


async def _fail() -> None:
    raise KeyError("x")
