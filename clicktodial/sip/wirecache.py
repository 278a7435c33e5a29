"""Bounded memories for the wire-format code: what decoding found, by text.

Pure Python: no Twisted imports.

The parser and the header/URI readers remember what they found in texts that
repeat from message to message (a UA's Contact and sent-by, a user's From/To
without the tag, Request-URIs, header names and layouts). Those texts come
from the network, so every such memory is a :class:`BoundedCache`: a plain
``dict`` (:attr:`BoundedCache.entries`, read directly by the hot paths, where
a method call or a ``dict`` subclass would cost more than the lookup) that
only grows through :meth:`BoundedCache.remember`, which enforces the limit.

Eviction rule: **emptied when full**. Adding an entry to a cache holding
``limit`` entries first empties it (then puts back its *seed*, the entries
known before any input, such as the canonical header names). A hit costs one
``dict`` lookup and nothing else (no recency to update, unlike an LRU), and a
miss at the limit costs one ``dict.clear()`` per ``limit`` misses: the
cheapest rule for both. Under a flood of distinct texts each cache refills
from what is seen next, so the usual texts are found again after one miss
each. A cache can never hold more than ``limit`` entries.

Every cache is created with a unique name and kept in a registry (while it
is in use): :func:`reset_all` empties all of them (tests use it to start from
a cold memory), :func:`registered` lists them.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Generic, TypeVar

__all__ = ["BoundedCache", "DEFAULT_LIMIT", "registered", "reset_all"]

#: Entries a cache holds at most unless told otherwise.
DEFAULT_LIMIT = 4096

_K = TypeVar("_K")
_V = TypeVar("_V")

# Weak: a cache made for a while (a test's) leaves the registry with its last user.
_REGISTRY: weakref.WeakValueDictionary[str, BoundedCache[object, object]] = (
    weakref.WeakValueDictionary()
)


class BoundedCache(Generic[_K, _V]):
    """A ``dict`` of at most *limit* entries, emptied when full (see the module doc).

    Read :attr:`entries` (``cache.entries.get(key)``, ``key in
    cache.entries``); add only with :meth:`remember`. *seed* entries are
    there from the start and are put back whenever the cache is emptied; they
    count towards the limit, which must exceed their number.
    """

    __slots__ = ("name", "limit", "entries", "_seed", "__weakref__")

    def __init__(
        self, name: str, limit: int = DEFAULT_LIMIT, seed: Mapping[_K, _V] | None = None
    ) -> None:
        seed = dict(seed or {})
        if limit <= len(seed):
            raise ValueError(f"cache {name!r}: limit {limit} must exceed its {len(seed)} seeds")
        if name in _REGISTRY:
            raise ValueError(f"a wire cache named {name!r} is in use already")
        self.name = name
        self.limit = limit
        #: The entries. The same ``dict`` for the cache's whole life (it is
        #: emptied in place), so a hot path may keep a reference to it.
        self.entries: dict[_K, _V] = dict(seed)
        self._seed = seed
        _REGISTRY[name] = self  # type: ignore[assignment]

    def remember(self, key: _K, value: _V) -> _V:
        """Add (or replace) *key*, first emptying the cache if it is full; return *value*."""
        entries = self.entries
        if len(entries) >= self.limit and key not in entries:
            entries.clear()
            entries.update(self._seed)
        entries[key] = value
        return value

    def clear(self) -> None:
        """Forget everything but the seed."""
        self.entries.clear()
        self.entries.update(self._seed)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"<BoundedCache {self.name} {len(self.entries)}/{self.limit}>"


def registered() -> list[BoundedCache[object, object]]:
    """Every wire cache in use."""
    return list(_REGISTRY.values())


def reset_all() -> None:
    """Empty every wire cache (seeds stay): decoding starts from a cold memory."""
    for cache in list(_REGISTRY.values()):
        cache.clear()
