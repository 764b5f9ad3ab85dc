"""Exact-match response cache: the key specification and the two-tier store.

The key (specified in docs/cache.md) is a SHA-256 over the tenant (gateway key id), the
resolved route, the namespace and its generation, and the canonical JSON of the request
body, so field order, JSON whitespace and ``1`` vs ``1.0`` never matter, every
output-affecting field does, and no tenant reads another's entry.

Entries live in an in-process LRU (per process locally, per isolate on the edge) in front
of the KeyValueStore port (SQLite locally, KV on the edge). Every entry carries its own
expiry, so a store that keeps values longer (KV's 60 s minimum) never serves them late. A
corrupt entry is a miss and is deleted; a store that is down degrades to no cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ..ports import BackgroundTasks, Clock, KeyValueStore
from .lru import MemoryLRU

log = logging.getLogger("flaregate.cache")

KEY_VERSION = 2
KEY_PREFIX = f"fg:c{KEY_VERSION}:"
DEFAULT_NAMESPACE = "default"
# Fields that shape the response's framing but never the completion itself.
IGNORED_FIELDS = frozenset({"stream", "stream_options"})
_KEY_HASH = re.compile(r"^[0-9a-f]{64}$")

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
    completion: dict[str, Any] = field(repr=False)

    @classmethod
    def create(cls, provider: str, body: str, completion: dict[str, Any], origin: Origin, now: float,
               ttl: float) -> CacheEntry:
        return cls(provider, body, now, now + ttl, origin, completion)

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
        return cls(provider, body, float(stored_at), float(expires_at), origin, completion)

    @property
    def tokens(self) -> int:
        return completion_tokens(self.completion)


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


Tier = Literal["memory", "store"]


class ResponseCache:
    """The two tiers behind one get/put/delete. Store writes run in the background."""

    def __init__(self, store: KeyValueStore, clock: Clock, tasks: BackgroundTasks,
                 memory: MemoryLRU[CacheEntry], memory_ttl_seconds: float) -> None:
        self._store = store
        self._clock = clock
        self._tasks = tasks
        self.memory = memory
        self._memory_ttl = memory_ttl_seconds
        self.store_hits = self.store_misses = self.store_errors = self.corrupt = self.writes = 0

    async def get(self, key: str) -> tuple[CacheEntry, Tier] | None:
        now = self._clock.now()
        entry = self.memory.get(key) if self.memory.enabled else None
        if entry is not None and entry.expires_at > now:
            return entry, "memory"
        try:
            raw = await self._store.get(key)
        except Exception:  # a store that is down degrades to no cache
            self.store_errors += 1
            log.warning("cache read failed; treating as a miss", exc_info=True)
            return None
        if raw is None:
            self.store_misses += 1
            return None
        try:
            entry = CacheEntry.from_text(raw)
        except (ValueError, TypeError, RecursionError):
            self.corrupt += 1
            log.warning("corrupt cache entry %s deleted", key_hash(key))
            try:
                await self._store.delete(key)
            except Exception:
                log.warning("could not delete corrupt cache entry", exc_info=True)
            return None
        if entry.expires_at <= now:  # kept longer by the store (KV's minimum TTL), not by us
            self.store_misses += 1
            return None
        self.store_hits += 1
        self._remember(key, entry, len(raw), now)
        return entry, "store"

    def put(self, key: str, entry: CacheEntry) -> None:
        """Keep ``entry`` in memory now and write it to the store in the background."""
        text = entry.to_text()
        now = self._clock.now()
        self._remember(key, entry, len(text), now)
        self._tasks.run(self._write(key, text, max(1, math.ceil(entry.expires_at - now))))

    def _remember(self, key: str, entry: CacheEntry, size: int, now: float) -> None:
        if self.memory.enabled:
            self.memory.put(key, entry, size, min(entry.expires_at - now, self._memory_ttl))

    async def _write(self, key: str, text: str, ttl: int) -> None:
        try:
            await self._store.put(key, text, ttl)
            self.writes += 1
        except Exception:
            self.store_errors += 1
            log.warning("cache write failed", exc_info=True)

    async def delete(self, key: str) -> None:
        """Remove from both tiers; raises when the store cannot be reached."""
        self.memory.delete(key)
        await self._store.delete(key)

    def stats(self) -> dict[str, Any]:
        return {
            "memory": self.memory.stats(),
            "store": {"hits": self.store_hits, "misses": self.store_misses, "errors": self.store_errors,
                      "corrupt_deleted": self.corrupt, "writes": self.writes},
        }
