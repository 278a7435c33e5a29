"""
Call traces as stored (:class:`~clicktodial.interfaces.ICallTraceStore`): the SIP messages
of a call's legs, bounded per call, and the bound rule every backend applies the same way.
The values (:class:`TracedMessage`, :class:`TraceAppend`, :class:`TraceLimits`,
:class:`CallTrace`) are in :mod:`clicktodial.store.values`, re-exported here.

A trace grows by appends (:class:`TraceAppend`: one call's new messages); once a message
does not fit the call's bounds (:class:`TraceLimits`), it and every later message of the
call are only counted (``dropped``), so a trace is always a prefix of what passed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from clicktodial.store.values import (
    DIRECTIONS,
    CallTrace,
    TraceAppend,
    TracedMessage,
    TraceLimits,
)

__all__ = [
    "DIRECTIONS",
    "CallTrace",
    "MemoryTraces",
    "TraceAppend",
    "TraceLimits",
    "TracedMessage",
    "fit_messages",
    "pack_messages",
    "unpack_messages",
]


def fit_messages(
    count: int, size: int, dropped: int, messages: Sequence[TracedMessage], limits: TraceLimits
) -> tuple[list[TracedMessage], int]:
    """
    Which of ``messages`` a trace holding ``count`` messages of ``size`` bytes (``dropped``
    already dropped) keeps under ``limits``, and how many it drops: the first message that
    does not fit, and every one after it, is dropped.
    """
    if dropped:
        return [], len(messages)
    kept: list[TracedMessage] = []
    for i, message in enumerate(messages):
        size += len(message.data)
        if count + len(kept) >= limits.max_messages or size > limits.max_bytes:
            return kept, len(messages) - i
        kept.append(message)
    return kept, 0


class _StoredTrace:
    __slots__ = ("dropped", "last_at_ms", "messages", "size")

    def __init__(self) -> None:
        self.messages: list[TracedMessage] = []
        self.size = 0
        self.dropped = 0
        self.last_at_ms = 0


class MemoryTraces:
    """Traces in a dictionary: the memory store's, and a model for other backends."""

    def __init__(self) -> None:
        self._traces: dict[str, _StoredTrace] = {}

    def append(self, appends: Sequence[TraceAppend], limits: TraceLimits) -> None:
        for append in appends:
            trace = self._traces.get(append.call_id)
            if trace is None:
                trace = self._traces[append.call_id] = _StoredTrace()
            kept, dropped = fit_messages(
                len(trace.messages), trace.size, trace.dropped, append.messages, limits
            )
            trace.messages.extend(kept)
            trace.size += sum(len(m.data) for m in kept)
            trace.dropped += dropped + append.dropped
            for message in append.messages:
                trace.last_at_ms = max(trace.last_at_ms, message.at_ms)

    def get(self, call_id: str) -> CallTrace | None:
        trace = self._traces.get(call_id)
        if trace is None:
            return None
        return CallTrace(call_id, tuple(trace.messages), trace.dropped)

    def purge(self, before: float) -> int:
        cutoff = before * 1000
        old = [call_id for call_id, trace in self._traces.items() if trace.last_at_ms < cutoff]
        for call_id in old:
            del self._traces[call_id]
        return len(old)


def pack_messages(messages: Sequence[TracedMessage]) -> bytes:
    """
    Messages as one blob, for stores that keep a call's messages in few rows (one per
    append): a JSON line of each message's fields and length, then the octets back to back.
    """
    header = json.dumps([[*m[:10], len(m.data)] for m in messages], separators=(",", ":"))
    return header.encode("utf-8") + b"\n" + b"".join(m.data for m in messages)


def unpack_messages(blob: bytes) -> list[TracedMessage]:
    """The messages :func:`pack_messages` packed."""
    end = blob.index(b"\n")
    offset = end + 1
    messages = []
    for fields in json.loads(blob[:end]):
        size = fields[10]
        if fields[1] not in DIRECTIONS:
            raise ValueError(f"direction must be 'in' or 'out', not {fields[1]!r}")
        fields[10] = blob[offset : offset + size]
        messages.append(TracedMessage._make(fields))
        offset += size
    return messages
