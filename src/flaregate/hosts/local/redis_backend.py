"""Redis for the local host when several replicas share state (``FLAREGATE_REDIS_URL``).

Rate limits stay one implementation: each call loads one partition's rows from a Redis hash
into the very ``RateLimiter`` the Durable Object runs, with Redis's clock (``TIME``), and
writes the changed rows back with a compare-and-set on the hash's version (a short Lua
script, the optimistic ``WATCH``/``MULTI`` in two round trips): when another replica changed
the partition in between, nothing is written and the call re-runs on the fresh rows.
All of a partition's policies are decided in that one step, all or nothing.

The cache's shared tier is plain Redis strings with ``EX`` (the in-process LRU stays in
front, as over SQLite). Namespace purge stays O(1): the cache layer bumps a generation key.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ...ratelimits.limiter import MemoryRows, RateLimiter

RATE_LIMIT_PREFIX = "fg:rl:"
CACHE_PREFIX = "fg:kv:"
WARM_CACHE_PREFIX = "fg:kvw:"
MAX_RETRIES = 64  # version conflicts before giving up (the enforcer's failure mode decides then)
SOCKET_TIMEOUT_SECONDS = 1.0  # a Redis that is gone fails fast into the configured failure mode
ROW_GRACE_SECONDS = 60  # a partition's hash outlives its last row's expiry by this much


def connect(url: str) -> Any:
    """One pooled asyncio client per process."""
    import redis.asyncio as redis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError

    # A pooled connection that died with a restarted Redis is replaced on its next use
    # (connection errors only: a timed-out write is not sent twice).
    return redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_SECONDS,
                                socket_connect_timeout=SOCKET_TIMEOUT_SECONDS, decode_responses=True,
                                health_check_interval=30, retry=Retry(ExponentialBackoff(cap=0.1), 2),
                                retry_on_error=[ConnectionError])


_VERSION_FIELD = "__v"
# Writes a partition's changed rows only when its version is still the one read (else 0:
# another replica won, decide again). Only bookkeeping here: the arithmetic stays in Python.
_COMPARE_AND_SET = """
local version = redis.call('HGET', KEYS[1], '__v') or ''
if version ~= ARGV[1] then return 0 end
local deleted = tonumber(ARGV[2])
for i = 1, deleted do redis.call('HDEL', KEYS[1], ARGV[2 + i]) end
local base = 3 + deleted
local changed = tonumber(ARGV[base])
for i = 0, changed - 1 do redis.call('HSET', KEYS[1], ARGV[base + 1 + 2 * i], ARGV[base + 2 + 2 * i]) end
redis.call('HINCRBY', KEYS[1], '__v', 1)
redis.call('EXPIREAT', KEYS[1], ARGV[base + 1 + 2 * changed])
return 1
"""


class _FixedClock:
    """Redis's time for one call: every replica decides on the same clock."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now


class _PartitionRows(MemoryRows):
    """One partition's rows loaded from its hash; remembers what the call changed."""

    def __init__(self, loaded: dict[str, str]) -> None:
        rows: dict[str, tuple[str, str, float]] = {}
        for key, raw in loaded.items():
            try:
                policy, state, expires_at = json.loads(raw)
                rows[key] = (policy, state, float(expires_at))
            except (ValueError, TypeError):
                continue  # an unreadable row starts afresh
        super().__init__(rows)
        self.changed: set[str] = set()
        self.deleted: set[str] = set()

    def _set(self, key: str, row: tuple[str, str, float]) -> None:
        super()._set(key, row)
        self.changed.add(key)
        self.deleted.discard(key)

    def _drop(self, key: str) -> None:
        super()._drop(key)
        self.changed.discard(key)
        self.deleted.add(key)

    def encoded(self, key: str) -> str:
        return json.dumps(list(self._rows[key]))

    def last_expiry(self) -> float:
        return max((v[2] for v in self._rows.values()), default=0.0)


class RedisRateLimiterClient:
    """The rate-limiter port over Redis: exact across any number of replicas."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._locks: dict[str, asyncio.Lock] = {}
        self._compare_and_set = redis.register_script(_COMPARE_AND_SET)

    async def _run(self, partition: str, method: str, *args: Any) -> dict[str, Any]:
        # Inside one replica, calls on a partition take turns: WATCH conflicts then come only
        # from other replicas (at most one contender each) instead of every concurrent request.
        lock = self._locks.setdefault(partition, asyncio.Lock())
        try:
            async with lock:
                return await self._transaction(partition, method, *args)
        finally:
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(partition, None)

    async def _transaction(self, partition: str, method: str, *args: Any) -> dict[str, Any]:
        hash_key = RATE_LIMIT_PREFIX + partition
        for _ in range(MAX_RETRIES):
            # One round trip to read the rows, their version and Redis's clock ...
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(hash_key)
                pipe.time()
                loaded, (seconds, micros) = await pipe.execute()
            now = float(seconds) + float(micros) / 1e6
            version = loaded.pop(_VERSION_FIELD, "")
            rows = _PartitionRows(loaded)
            rows.sweep(now)
            limiter = RateLimiter(None, _FixedClock(now), rows)  # type: ignore[arg-type]
            target = limiter.partition(partition) if partition else limiter
            result: dict[str, Any] = getattr(target, method)(*args)
            if not rows.changed and not rows.deleted:
                return result  # a refusal or a read: the snapshot was consistent
            # ... and one to write them back only if no replica changed them since.
            changed = [item for k in rows.changed for item in (k, rows.encoded(k))]
            argv = [version, len(rows.deleted), *rows.deleted, len(rows.changed), *changed,
                    int(max(rows.last_expiry(), now)) + ROW_GRACE_SECONDS]
            if await self._compare_and_set(keys=[hash_key], args=argv):
                return result
        raise RuntimeError(f"rate-limit partition {partition!r} stayed contended for {MAX_RETRIES} tries")

    async def check(self, key: str, policy: dict[str, Any], cost: float) -> dict[str, Any]:
        return await self._run("", "check", key, policy, cost)

    async def acquire(self, name: str, checks: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._run(self._name(name), "acquire", checks)

    async def reconcile(self, name: str, adjustments: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._run(self._name(name), "reconcile", adjustments)

    async def usage(self, name: str) -> dict[str, Any]:
        return await self._run(self._name(name), "usage")

    async def reset(self, name: str, policy: str = "") -> dict[str, Any]:
        return await self._run(self._name(name), "reset", policy)

    @staticmethod
    def _name(name: str) -> str:
        # The same validation the object does, before the name becomes part of a Redis key.
        RateLimiter.in_memory(_FixedClock(0.0)).partition(name)
        return name


class RedisKeyValueStore:
    """The cache's shared tiers: text values with a TTL, the same for every replica (the
    cold tier under ``fg:kv:``, the warm one under ``fg:kvw:``)."""

    def __init__(self, redis: Any, prefix: str = CACHE_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix

    async def get(self, key: str) -> str | None:
        value: str | None = await self._redis.get(self._prefix + key)
        return value

    async def put(self, key: str, value: str, ttl_seconds: int) -> None:
        await self._redis.set(self._prefix + key, value, ex=max(1, int(ttl_seconds)))

    async def delete(self, key: str) -> None:
        await self._redis.delete(self._prefix + key)


NONCE_PREFIX = "fg:nonce:"


class RedisSecurityClient:
    """Signing nonces in Redis (``SET NX`` with the nonce's expiry), so a request signed once
    is refused as a replay on every replica; the other operations (gateway keys, webhooks)
    stay in the replica's own store."""

    def __init__(self, redis: Any, local: Any) -> None:
        self._redis = redis
        self._local = local

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        if op != "nonces.use":
            return await self._local.call(op, args)
        nonce, expires_at = args["nonce"], float(args["expires_at"])
        # PXAT on Redis's clock is absolute: the same expiry whichever replica set it.
        stored = await self._redis.set(NONCE_PREFIX + nonce, "1", nx=True, pxat=max(1, int(expires_at * 1000)))
        return bool(stored)


HUB_STREAM = "fg:hub"
HUB_STREAM_MAX = 200_000  # events kept for replicas that start later (approximate trim)
_READ_BLOCK_MS = 1000


class RedisHubFeed:
    """Every replica's request events into one Redis Stream; every replica's hub folds the
    whole stream, so ``/ws``, ``/metrics`` and ``/v1/analytics`` show the same totals
    whichever replica answers (a few milliseconds behind the newest event)."""

    def __init__(self, redis: Any, hub: Any) -> None:
        self._redis = redis
        self._hub = hub
        self._last_id = "0-0"  # a replica that starts later folds the history still kept

    async def publish(self, events: list[dict[str, Any]]) -> None:
        try:
            await self._redis.xadd(HUB_STREAM, {"events": json.dumps(events)}, maxlen=HUB_STREAM_MAX,
                                   approximate=True)
        except Exception:
            # Redis away: this replica still counts its own requests rather than lose them.
            await self._hub.record(events)

    async def run(self) -> None:
        while True:
            try:
                batches = await self._redis.xread({HUB_STREAM: self._last_id}, count=500, block=_READ_BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.5)  # Redis away: try again, from where this replica stopped
                continue
            for _stream, entries in batches or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    try:
                        events = json.loads(fields.get("events", "[]"))
                    except ValueError:
                        continue
                    await self._hub.record(events)
