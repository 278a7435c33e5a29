"""
The daemon's garbage collector policy, applied once it has started.

CPython's cyclic collector runs a young-generation pass every 700 net allocations and, every
100 of those, a full pass over every tracked object. A SIP daemon under load allocates a few
hundred objects per message and holds tens of thousands alive (every UDP transaction lives
64*T1 = 32 s after its answer, RFC 3261 §17.2.2), so the full passes scan them over and
over: about 12 % of the daemon's CPU at 300 authenticated REGISTERs/s (docs/benchmarks.md,
"Garbage collection").

After start-up the daemon therefore

* moves everything alive then (modules, SQLAlchemy, the configuration, the users' caches...)
  to the permanent generation (``gc.freeze()``): never scanned again;
* collects the young generation every ``YOUNG`` allocations instead of 700, and the older
  ones less often. Reference cycles are still collected (a Failure's traceback, a Deferred
  chain pointing back at its owner), only later: memory held by garbage cycles grows by a
  bounded amount (the objects of about ``YOUNG`` * ``MIDDLE`` allocations at most before a
  middle pass reaches them; full passes also still run when the long-lived objects grew by
  25 %, CPython's own rule).
"""

from __future__ import annotations

import gc

__all__ = ["MIDDLE", "OLD", "YOUNG", "apply_daemon_gc_policy"]

#: Allocations (net of deallocations) between young-generation collections (CPython: 700).
YOUNG = 10_000
#: Young collections between middle-generation collections (CPython: 10).
MIDDLE = 20
#: Middle collections between full collections (CPython: 10).
OLD = 100


def apply_daemon_gc_policy() -> None:
    """Freeze what start-up left alive and collect less often (see the module docstring)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
