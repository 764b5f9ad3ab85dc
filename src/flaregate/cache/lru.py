"""The in-process cache tier: an LRU bounded in entries and bytes, with per-entry expiry.

Host-agnostic (no I/O, no threads): one per process locally, one per isolate on the edge.
Values are opaque to it; the caller states each value's size in bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypedDict, TypeVar

from ..ports import Clock

V = TypeVar("V")


class LruStats(TypedDict):
    entries: int
    bytes: int
    max_entries: int
    max_bytes: int
    hits: int
    misses: int
    hit_rate: float | None
    evictions: int
    expirations: int
    rejected: int


@dataclass(slots=True)
class _Slot(Generic[V]):
    value: V
    size: int
    expires_at: float


class MemoryLRU(Generic[V]):
    def __init__(self, clock: Clock, max_entries: int, max_bytes: int) -> None:
        self._clock = clock
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._slots: OrderedDict[str, _Slot[V]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.evictions = self.expirations = self.rejected = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: str) -> bool:
        return key in self._slots

    def get(self, key: str) -> V | None:
        slot = self._slots.get(key)
        if slot is None:
            self.misses += 1
            return None
        if slot.expires_at <= self._clock.now():
            self._drop(key)
            self.expirations += 1
            self.misses += 1
            return None
        self._slots.move_to_end(key)
        self.hits += 1
        return slot.value

    def put(self, key: str, value: V, size: int, ttl_seconds: float) -> bool:
        """Keep ``value`` for at most ``ttl_seconds``; False when it can never fit."""
        if not self.enabled or size > self.max_bytes or ttl_seconds <= 0:
            self.rejected += 1
            self.delete(key)  # an older value of the key must not outlive its replacement
            return False
        if key in self._slots:
            self._drop(key)
        self._slots[key] = _Slot(value, size, self._clock.now() + ttl_seconds)
        self.bytes += size
        while len(self._slots) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._slots))
            self._drop(oldest)
            self.evictions += 1
        return True

    def delete(self, key: str) -> bool:
        if key in self._slots:
            self._drop(key)
            return True
        return False

    def _drop(self, key: str) -> None:
        slot = self._slots.pop(key)
        self.bytes -= slot.size

    def stats(self) -> LruStats:
        lookups = self.hits + self.misses
        return {
            "entries": len(self._slots),
            "bytes": self.bytes,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / lookups, 4) if lookups else None,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "rejected": self.rejected,
        }
