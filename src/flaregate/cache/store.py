"""Exact-match response cache: the key specification and the three-tier store.

The key (specified in docs/cache.md) is a SHA-256 over the tenant (gateway key id), the
resolved route, the namespace and its generation, and the canonical JSON of the request
body, so field order, JSON whitespace and ``1`` vs ``1.0`` never matter, every
output-affecting field does, and no tenant reads another's entry.

Entries live in three tiers: hot, an in-process LRU (per process locally, per isolate on
the edge); warm, the WarmCacheStore port (the Cache API on the edge, a short-lived table or
Redis prefix locally); cold, the KeyValueStore port (SQLite or Redis locally, KV on the edge). Every entry carries its own
expiry, so a store that keeps values longer (KV's 60 s minimum) never serves them late. A
corrupt entry is a miss and is deleted; a store that is down degrades to no cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Literal

from ..ports import BackgroundTasks, Clock, KeyValueStore, WarmCacheStore
from .lru import MemoryLRU

log = logging.getLogger("flaregate.cache")

KEY_VERSION = 2
KEY_PREFIX = f"fg:c{KEY_VERSION}:"
DEFAULT_NAMESPACE = "default"
# Fields that shape the response's framing but never the completion itself.
IGNORED_FIELDS = frozenset({"stream", "stream_options"})
_KEY_HASH = re.compile(r"^[0-9a-f]{64}$")
# What the memory tier holds per entry beyond its text and key (the entry object, its LRU
# slot and index), measured with tracemalloc on CPython: with it, CACHE_MEMORY_MAX_BYTES
# bounds the tier's real size within a few percent for small and large answers alike.
_MEMORY_SLOT_BYTES = 256

Origin = Literal["json", "sse", "response"]  # response: a Responses API object


def canonical(value: Any) -> Any:
    """The value as the key sees it: integral floats become ints (1.0 == 1), recursively."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def key_material(tenant: str, route: str, body: dict[str, Any], namespace: str = DEFAULT_NAMESPACE,
                 generation: str = "0", *, operation: str = "chat", tags: dict[str, str] | None = None) -> str:
    fields = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    material: dict[str, Any] = {"v": KEY_VERSION, "tenant": tenant, "route": route, "namespace": namespace,
                                "generation": generation, "body": canonical(fields)}
    # Present only when used, so chat keys without key tags stay what they were.
    if operation != "chat":
        material["operation"] = operation
    if tags is not None:
        material["tags"] = tags
    return json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def cache_key(tenant: str, route: str, body: dict[str, Any], namespace: str = DEFAULT_NAMESPACE,
              generation: str = "0", *, operation: str = "chat", tags: dict[str, str] | None = None) -> str:
    """The store key: ``fg:c2:`` + the key hash (64 hex digits)."""
    material = key_material(tenant, route, body, namespace, generation, operation=operation, tags=tags)
    return KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()


def key_hash(key: str) -> str:
    return key[len(KEY_PREFIX):]


def store_key(hash_: str) -> str | None:
    """The store key for a key hash a client sent, or None when it is not one."""
    return KEY_PREFIX + hash_ if isinstance(hash_, str) and _KEY_HASH.match(hash_) else None


@dataclass(slots=True)
class CacheEntry:
    provider: str
    body: str  # the completion as JSON text: verbatim from the provider, or assembled from SSE
    stored_at: float
    expires_at: float
    origin: Origin
    tokens: int  # the completion's total tokens: what a hit saves
    # The parsed completion is not kept: in the memory tier it took two to six times the
    # body's own bytes (CACHE_MEMORY_MAX_BYTES counted only the text). A stream replay parses it.

    @classmethod
    def create(cls, provider: str, body: str, completion: dict[str, Any], origin: Origin, now: float,
               ttl: float) -> CacheEntry:
        return cls(provider, body, now, now + ttl, origin, completion_tokens(completion))

    @property
    def completion(self) -> dict[str, Any]:
        """The completion object (checked to be one when the entry was read or made)."""
        completion: dict[str, Any] = json.loads(self.body)
        return completion

    def to_text(self) -> str:
        return json.dumps({"v": KEY_VERSION, "provider": self.provider, "stored_at": self.stored_at,
                           "expires_at": self.expires_at, "origin": self.origin, "body": self.body})

    @classmethod
    def from_text(cls, text: str) -> CacheEntry:
        """Parse a stored entry; ValueError when it is corrupt or truncated."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("v") != KEY_VERSION:
            raise ValueError("bad entry shape")
        provider, body, origin = raw.get("provider"), raw.get("body"), raw.get("origin")
        stored_at, expires_at = raw.get("stored_at"), raw.get("expires_at")
        if not (isinstance(provider, str) and isinstance(body, str) and origin in ("json", "sse", "response")
                and isinstance(stored_at, int | float) and isinstance(expires_at, int | float)):
            raise ValueError("bad entry fields")
        completion = json.loads(body)
        shape = "output" if origin == "response" else "choices"
        if not isinstance(completion, dict) or not isinstance(completion.get(shape), list):
            raise ValueError("bad completion")
        return cls(provider, body, float(stored_at), float(expires_at), origin, completion_tokens(completion))


def _memory_size(key: str, text_chars: int) -> int:
    return text_chars + len(key) + _MEMORY_SLOT_BYTES


def completion_tokens(completion: dict[str, Any]) -> int:
    """Total tokens of a completion's usage (0 when it has none): what a hit saves."""
    usage = completion.get("usage")
    if not isinstance(usage, dict):
        return 0
    total = usage.get("total_tokens")
    if not isinstance(total, int) or isinstance(total, bool):
        total = sum(v for k in ("prompt_tokens", "completion_tokens")
                    if isinstance(v := usage.get(k), int) and not isinstance(v, bool))
    return max(0, total)


Tier = Literal["hot", "warm", "cold"]


@dataclass(frozen=True, slots=True)
class TierLifetimes:
    """How long each tier holds an entry at most (0: the tier is off), and how many reads
    within one hot lifetime bring an entry read from a lower tier back into the hot one."""

    hot: float = 300.0
    warm: float = 3600.0
    cold: float = 86400.0
    promote_hits: int = 2


class _AccessLog:
    """The last few read times of recent keys, bounded: "read N times within the hot
    lifetime" is the rule that promotes an entry to the hot tier."""

    def __init__(self, depth: int, max_keys: int) -> None:
        self._depth = depth
        self._max_keys = max_keys
        self._reads: OrderedDict[str, deque[float]] = OrderedDict()

    def record(self, key: str, now: float) -> None:
        reads = self._reads.get(key)
        if reads is None:
            reads = self._reads[key] = deque(maxlen=self._depth)
            while len(self._reads) > self._max_keys:
                self._reads.popitem(last=False)
        else:
            self._reads.move_to_end(key)
        reads.append(now)

    def frequent(self, key: str, now: float, window: float) -> bool:
        reads = self._reads.get(key)
        return reads is not None and len(reads) >= self._depth and now - reads[0] < window

    def forget(self, key: str) -> None:
        self._reads.pop(key, None)


class _TierCounters:
    __slots__ = ("hits", "misses", "errors", "corrupt", "writes", "writes_avoided")

    def __init__(self) -> None:
        self.hits = self.misses = self.errors = self.corrupt = self.writes = self.writes_avoided = 0

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "errors": self.errors,
                "corrupt_deleted": self.corrupt, "writes": self.writes}


class ResponseCache:
    """Three tiers behind one get/put/delete: hot (the in-process LRU), warm (a short-lived
    store: the Cache API on the edge) and cold (KV / the local store). A hit in a lower tier
    is copied into the tiers above it (into hot only when the entry is read often); a write
    goes to the tiers its TTL reaches, so the cold tier (KV: paid per write) is written only
    for entries meant to outlive the warm one. Writes below hot run in the background."""

    def __init__(self, cold: KeyValueStore, clock: Clock, tasks: BackgroundTasks,
                 memory: MemoryLRU[CacheEntry], lifetimes: TierLifetimes,
                 warm: WarmCacheStore | None = None) -> None:
        self._cold = cold
        self._warm = warm if lifetimes.warm > 0 else None
        self._clock = clock
        self._tasks = tasks
        self.memory = memory
        self.lifetimes = lifetimes
        self._reads = _AccessLog(lifetimes.promote_hits, max(1024, 4 * memory.max_entries))
        self.warm_counts = _TierCounters()
        self.cold_counts = _TierCounters()

    @property
    def hot_enabled(self) -> bool:
        return self.memory.enabled and self.lifetimes.hot > 0

    @property
    def longest_lifetime(self) -> float:
        cold = self.lifetimes.cold
        warm = self.lifetimes.warm if self._warm is not None else 0
        hot = self.lifetimes.hot if self.hot_enabled else 0
        return max(cold, warm, hot)

    def reads_cold(self, ttl: float | None) -> bool:
        """Whether a request whose answers live ``ttl`` seconds looks in the cold tier: only
        where its own answer would have been written there. With the warm tier on, an entry
        whose TTL fits the warm lifetime is never written cold (see :meth:`put`), so such a
        request reads no KV; an entry stored by a request with a longer TTL is then found
        only by requests with a longer TTL too."""
        if self.lifetimes.cold <= 0:
            return False  # a tier turned off is not read either (on the edge: no KV read per miss)
        return ttl is None or self._warm is None or ttl > self.lifetimes.warm

    async def get(self, key: str, ttl: float | None = None) -> tuple[CacheEntry, Tier] | None:
        """The entry, from the fastest tier that has it; ``ttl``: the asking request's own
        (None: every tier is read)."""
        now = self._clock.now()
        if self.hot_enabled:
            entry = self.memory.get(key)
            if entry is not None and entry.expires_at > now:
                self._reads.record(key, now)
                return entry, "hot"
        if self._warm is not None:
            found = await self._read(self._warm, self.warm_counts, key, now)
            if found is not None:
                entry, raw = found
                self._promote_hot(key, entry, len(raw), now)
                return entry, "warm"
        if not self.reads_cold(ttl):
            return None
        found = await self._read(self._cold, self.cold_counts, key, now)
        if found is None:
            return None
        entry, raw = found
        if self._warm is not None:  # the stored text as read: nothing to serialise again
            self._write_later(self._warm, self.warm_counts, key, raw, min(entry.expires_at - now, self.lifetimes.warm))
        self._promote_hot(key, entry, len(raw), now)
        return entry, "cold"

    async def _read(self, store: KeyValueStore | WarmCacheStore, counts: _TierCounters, key: str,
                    now: float) -> tuple[CacheEntry, str] | None:
        try:
            raw = await store.get(key)
        except Exception:  # a tier that is down degrades to the next one, then to no cache
            counts.errors += 1
            log.warning("cache read failed; treating as a miss", exc_info=True)
            return None
        if raw is None:
            counts.misses += 1
            return None
        try:
            entry = CacheEntry.from_text(raw)
        except (ValueError, TypeError, RecursionError):
            counts.corrupt += 1
            log.warning("corrupt cache entry %s deleted", key_hash(key))
            try:
                await store.delete(key)
            except Exception:
                log.warning("could not delete corrupt cache entry", exc_info=True)
            return None
        if entry.expires_at <= now:  # kept longer by the store (KV's minimum TTL), not by us
            counts.misses += 1
            return None
        counts.hits += 1
        return entry, raw

    def _promote_hot(self, key: str, entry: CacheEntry, size: int, now: float) -> None:
        self._reads.record(key, now)
        if self.hot_enabled and self._reads.frequent(key, now, self.lifetimes.hot):
            self.memory.put(key, entry, _memory_size(key, size), min(entry.expires_at - now, self.lifetimes.hot))

    def put(self, key: str, entry: CacheEntry) -> tuple[Tier, ...]:
        """Keep ``entry`` in the tiers its TTL reaches (hot at once, the others in the
        background); returns those tiers. An entry lives at most the longest tier's lifetime."""
        now = self._clock.now()
        entry.expires_at = min(entry.expires_at, now + self.longest_lifetime)
        ttl = entry.expires_at - now
        text = entry.to_text()
        tiers: list[Tier] = []
        reach = 0.0  # how long the tiers written so far keep the entry
        if self.hot_enabled and self.memory.put(key, entry, _memory_size(key, len(text)), min(ttl, self.lifetimes.hot)):
            self._reads.record(key, now)
            tiers.append("hot")
            reach = min(ttl, self.lifetimes.hot)
        else:
            self.memory.delete(key)
        if self._warm is not None:
            self._write_later(self._warm, self.warm_counts, key, text, min(ttl, self.lifetimes.warm))
            tiers.append("warm")
            reach = max(reach, min(ttl, self.lifetimes.warm))
        if self.lifetimes.cold > 0 and ttl > reach:
            self._write_later(self._cold, self.cold_counts, key, text, min(ttl, self.lifetimes.cold))
            tiers.append("cold")
        elif self.lifetimes.cold > 0:
            self.cold_counts.writes_avoided += 1
        return tuple(tiers)

    def _write_later(self, store: KeyValueStore | WarmCacheStore, counts: _TierCounters, key: str,
                     text: str, ttl: float) -> None:
        if ttl > 0:
            self._tasks.run(self._write(store, counts, key, text, max(1, math.ceil(ttl))))

    @staticmethod
    async def _write(store: KeyValueStore | WarmCacheStore, counts: _TierCounters, key: str, text: str,
                     ttl: int) -> None:
        try:
            await store.put(key, text, ttl)
            counts.writes += 1
        except Exception:
            counts.errors += 1
            log.warning("cache write failed", exc_info=True)

    async def delete(self, key: str) -> None:
        """Remove from every tier; raises when the cold store cannot be reached."""
        self.memory.delete(key)
        self._reads.forget(key)
        if self._warm is not None:
            try:
                await self._warm.delete(key)
            except Exception:
                log.warning("could not delete from the warm cache tier", exc_info=True)
        await self._cold.delete(key)

    def stats(self) -> dict[str, Any]:
        return {
            "hot": {**self.memory.stats(), "ttl_seconds": self.lifetimes.hot,
                    "promote_hits": self.lifetimes.promote_hits},
            "warm": {**self.warm_counts.stats(), "enabled": self._warm is not None,
                     "ttl_seconds": self.lifetimes.warm},
            "cold": {**self.cold_counts.stats(), "ttl_seconds": self.lifetimes.cold,
                     "writes_avoided": self.cold_counts.writes_avoided},
        }
