"""The daemon's garbage collector policy (clicktodial.gcpolicy)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from clicktodial.gcpolicy import MIDDLE, OLD, YOUNG, apply_daemon_gc_policy


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_policy_freezes_start_up_objects_and_raises_thresholds() -> None:
    kept = [object() for _ in range(3)]
    gc.unfreeze()
    apply_daemon_gc_policy()
    assert gc.get_threshold() == (YOUNG, MIDDLE, OLD)
    assert YOUNG > 700
    assert gc.get_freeze_count() > len(kept)


@pytest.mark.usefixtures("restored_gc")
def test_cycles_are_still_collected_without_being_asked() -> None:
    apply_daemon_gc_policy()
    collected: list[str] = []

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

        def __del__(self) -> None:
            collected.append("node")

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    # No explicit gc.collect(): the young-generation pass triggered by allocations finds it.
    filler = [[] for _ in range(2 * YOUNG)]
    assert collected == ["node", "node"]
    assert len(filler) == 2 * YOUNG
