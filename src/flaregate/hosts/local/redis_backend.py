"""Redis for the local host when several replicas share state (``FLAREGATE_REDIS_URL``).

Rate limits stay one implementation: each call loads one partition's rows from a Redis hash
into the very ``RateLimiter`` the Durable Object runs, with Redis's clock (``TIME``), and
writes the changed rows back with a compare-and-set on the hash's version (a short Lua
script, the optimistic ``WATCH``/``MULTI`` in two round trips): when another replica changed
the partition in between, nothing is written and the call re-runs on the fresh rows.
All of a partition's policies are decided in that one step, all or nothing. Inside one
replica, the calls on a partition that arrive while its round trip is on its way are
decided together in the next one (:class:`Batches`): one read and one write for them all.

The cache's shared tier is plain Redis strings with ``EX`` (the in-process LRU stays in
front, as over SQLite). Namespace purge stays O(1): the cache layer bumps a generation key.

The security store (gateway keys made through ``/admin/keys``, webhooks and their delivery
log, signing nonces) is in Redis too, with the SQL store's operations and answers.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from ...errors import GatewayError
from ...ratelimits.limiter import MemoryRows, RateLimiter
from ...realtime import store as realtime_store
from ...security.store import AUDIT_LIST_LIMIT, DELIVERY_LOG_LIMIT, operations

RATE_LIMIT_PREFIX = "fg:rl:"
CACHE_PREFIX = "fg:kv:"
WARM_CACHE_PREFIX = "fg:kvw:"
MAX_RETRIES = 64  # version conflicts before giving up (the enforcer's failure mode decides then)
MAX_BATCH = 128  # calls on one name decided in one round trip
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


class Batches:
    """Calls on one name that arrive while a round trip for that name is on its way wait,
    and go together in the next one: under load a round trip serves many requests, and
    every answer still comes from a read sent after its call arrived (no staleness).
    ``decide(name, calls)`` answers a batch, one result (or exception) per call."""

    def __init__(self, decide: Callable[[str, list[Any]], Awaitable[list[Any]]], limit: int = MAX_BATCH) -> None:
        self._decide = decide
        self._limit = limit
        self._queues: dict[str, list[tuple[Any, asyncio.Future[Any]]]] = {}
        self._drains: set[asyncio.Task[None]] = set()

    async def run(self, name: str, call: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = []
            drain = asyncio.ensure_future(self._drain(name, queue))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        queue.append((call, future))
        return await future

    async def _drain(self, name: str, queue: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            while queue:
                batch = [item for item in queue[:self._limit] if not item[1].done()]  # a caller gone: skip it
                del queue[:self._limit]
                if not batch:
                    continue
                try:
                    answers = await self._decide(name, [call for call, _ in batch])
                except Exception as exc:
                    answers = [exc] * len(batch)
                for (_, future), answer in zip(batch, answers, strict=True):
                    if future.done():
                        continue
                    if isinstance(answer, BaseException):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        finally:
            del self._queues[name]


class RedisRateLimiterClient:
    """The rate-limiter port over Redis: exact across any number of replicas."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._compare_and_set = redis.register_script(_COMPARE_AND_SET)
        # Inside one replica the calls on a partition go in batches (two round trips for a
        # whole batch): version conflicts then come only from other replicas.
        self._batches = Batches(self._transaction)

    async def _run(self, partition: str, method: str, *args: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._batches.run(partition, (method, args))
        return result

    async def _transaction(self, partition: str, calls: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Decide a batch of calls on one partition, in order, on one read of its rows; all
        written back at once, or all decided again on fresh rows when another replica won."""
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
            results: list[Any] = []
            for method, args in calls:
                try:
                    results.append(getattr(target, method)(*args))
                except Exception as exc:  # a bad call (validated before any row changes) fails alone
                    results.append(exc)
            if not rows.changed and not rows.deleted:
                return results  # refusals or reads: the snapshot was consistent
            # ... and one to write them back only if no replica changed them since.
            changed = [item for k in rows.changed for item in (k, rows.encoded(k))]
            argv = [version, len(rows.deleted), *rows.deleted, len(rows.changed), *changed,
                    int(max(rows.last_expiry(), now)) + ROW_GRACE_SECONDS]
            if await self._compare_and_set(keys=[hash_key], args=argv):
                return results
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
REALTIME_SLOTS_PREFIX = "fg:rt:slots:"  # a sorted set per key: session -> expiry (ms)
REALTIME_SECRET_PREFIX = "fg:rt:secret:"  # an ephemeral secret's record, by digest, expiring with it
# Sweep the key's expired slots, count, and take one if there is room: one atomic step.
_ACQUIRE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local held = redis.call('ZCARD', KEYS[1])
if held >= tonumber(ARGV[2]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, held, tonumber(first[2] or ARGV[1])}
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[4]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) * 4)
return {1, held + 1, 0}
"""
KEY_PREFIX = "fg:key:"  # one hash per stored gateway key, named by its digest: a lookup is one HGETALL
KEY_IDS = "fg:key_ids"  # key id -> digest, for listing and revoking by id
WEBHOOKS = "fg:webhooks"  # webhook id -> its record (JSON, with its signing secret)
MCP_PINS = "fg:mcp_pins"  # server.tool -> its pin (JSON: approved and last seen definition hash)
DELIVERIES_PREFIX = "fg:deliveries:"  # a list per webhook, newest first, DELIVERY_LOG_LIMIT long
TEAMS = "fg:teams"  # team id -> the team (JSON: its policy, name and creation time)
CREDENTIALS = "fg:admin_credentials"  # credential id -> its record (JSON, with its digest)
AUDIT = "fg:admin_audit"  # a sorted set: the admin changes as JSON, scored by time
LAST_USED = "fg:key_last_used"  # key id -> when it was last used (to the minute)

# A key is created only when neither its id nor its digest is taken (the SQL store's
# PRIMARY KEY and UNIQUE); ARGV: id, digest, then the record's fields as name/value pairs.
_CREATE_KEY = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""
# Revocation keeps the first revocation time (the SQL store's "revoked_at IS NULL").
_REVOKE_KEY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'revoked_at', ARGV[1])
return 1
"""
_UPDATE_KEY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'policy', ARGV[1])
return 1
"""
_REPLACE_TEAM = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
# Rotation: the key's hash moves to its new digest; the old digest's hash keeps only the
# key id, its successor digest and when its grace ends (and expires then), or goes at once.
# KEYS: key ids, old hash, new hash; ARGV: id, old digest, new digest, prefix, valid_until, its ms (0: none).
_ROTATE_KEY = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[2], 'revoked_at') == 1 or redis.call('HEXISTS', KEYS[2], 'successor') == 1 then
  return 0
end
local fields = redis.call('HGETALL', KEYS[2])
redis.call('HSET', KEYS[3], unpack(fields))
redis.call('HSET', KEYS[3], 'prefix', ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('DEL', KEYS[2])
if ARGV[6] ~= '0' then
  redis.call('HSET', KEYS[2], 'id', ARGV[1], 'successor', ARGV[3], 'secret_expires_at', ARGV[5])
  redis.call('PEXPIREAT', KEYS[2], ARGV[6])
end
return 1
"""
# Last use: a later time only (replicas may write the same minute; none moves it back).
_TOUCH_KEYS = """
for i = 1, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if not current or tonumber(current) < tonumber(ARGV[i + 1]) then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""
_KEY_FIELDS = ("id", "prefix", "name", "policy", "created_at", "expires_at", "revoked_at")


def _key_record(fields: dict[str, str], digest: str) -> dict[str, Any] | None:
    """A key's hash as the SQL store returns its row (floats kept exact through repr)."""
    if not fields.get("id"):
        return None
    def number(name: str) -> float | None:
        value = fields.get(name)
        return float(value) if value else None
    return {"id": fields["id"], "prefix": fields.get("prefix", ""), "name": fields.get("name", ""),
            "policy": json.loads(fields.get("policy") or "{}"), "created_at": number("created_at") or 0.0,
            "expires_at": number("expires_at"), "revoked_at": number("revoked_at"), "digest": digest}


class RedisSecurityClient:
    """The security store over Redis, the same for every replica: gateway keys created
    through ``/admin/keys`` on one replica authenticate on all of them at once, a
    revocation refuses everywhere at once (with Redis, key lookups are not cached per
    process), webhooks registered on one are delivered by all, and signing nonces are
    ``SET NX`` with the nonce's expiry, so a request signed once is a replay everywhere.
    The operations and answers are the SQL store's (:class:`SecurityStore`)."""

    def __init__(self, redis: Any, clock: Any) -> None:
        self._redis = redis
        self._clock = clock
        self._create_key = redis.register_script(_CREATE_KEY)
        self._revoke_key = redis.register_script(_REVOKE_KEY)
        self._update_key = redis.register_script(_UPDATE_KEY)
        self._replace_team = redis.register_script(_REPLACE_TEAM)
        self._rotate_key = redis.register_script(_ROTATE_KEY)
        self._touch_keys = redis.register_script(_TOUCH_KEYS)
        self._finds = Batches(self._find_keys)
        self._acquire_slot = redis.register_script(_ACQUIRE_SLOT)
        self._ops = {**operations(self), **realtime_store.operations(self)}

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        from redis.exceptions import RedisError

        method = self._ops.get(op)
        if method is None:
            raise ValueError(f"unknown security-store operation {op!r}")
        try:
            return await method(**args)
        except (RedisError, OSError):
            # Redis away: stored keys, signed requests and the admin API wait for it (a 503
            # the client may retry); keys in FLAREGATE_API_KEYS need no store and still work.
            raise GatewayError(503, "The gateway's key store (Redis) is unavailable; retry shortly.",
                               type="api_error", code="key_store_unavailable", headers={"retry-after": "1"}) from None

    # -- gateway keys --------------------------------------------------------------------
    async def create_key(self, id: str, digest: str, prefix: str, name: str, policy: dict[str, Any],
                         expires_at: float | None) -> dict[str, Any]:
        fields = {"id": id, "prefix": prefix, "name": name, "policy": json.dumps(policy),
                  "created_at": repr(float(self._clock.now())),
                  "expires_at": "" if expires_at is None else repr(float(expires_at))}
        argv = [id, digest, *(item for pair in fields.items() for item in pair)]
        if not await self._create_key(keys=[KEY_PREFIX + digest, KEY_IDS], args=argv):
            raise ValueError(f"a gateway key with id {id!r} or the same digest exists")
        record = await self.find_key(digest)
        assert record is not None
        return _public_key(record)

    async def adopt_key(self, record: dict[str, Any]) -> bool:
        """A key moved from another store, as it was (times, revocation); False when a key
        with its id or digest is here already (then the one here stands)."""
        fields = {"id": record["id"], "prefix": record["prefix"], "name": record["name"],
                  "policy": json.dumps(record["policy"]), "created_at": repr(float(record["created_at"]))}
        for name in ("expires_at", "revoked_at"):  # absent when None: revocation is an HSETNX
            if record.get(name) is not None:
                fields[name] = repr(float(record[name]))
        argv = [record["id"], record["digest"], *(item for pair in fields.items() for item in pair)]
        return bool(await self._create_key(keys=[KEY_PREFIX + record["digest"], KEY_IDS], args=argv))

    async def adopt_webhook(self, record: dict[str, Any]) -> bool:
        return bool(await self._redis.hsetnx(WEBHOOKS, record["id"], json.dumps(record)))

    async def find_key(self, digest: str) -> dict[str, Any] | None:
        # Concurrent lookups share a round trip (not a cache: each read is sent after its call).
        found: dict[str, Any] | None = await self._finds.run("", digest)
        return found

    async def _find_keys(self, _name: str, digests: list[str]) -> list[dict[str, Any] | None]:
        if len(digests) == 1:
            loaded = [await self._redis.hgetall(KEY_PREFIX + digests[0])]
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                for digest in digests:
                    pipe.hgetall(KEY_PREFIX + digest)
                loaded = await pipe.execute()
        records = [_key_record(fields, digest) for digest, fields in zip(digests, loaded, strict=True)]
        # A rotated key's previous secret: the key as its successor has it, while the grace lasts.
        previous = [(i, fields) for i, fields in enumerate(loaded) if fields.get("successor")]
        if previous:
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, fields in previous:
                    pipe.hgetall(KEY_PREFIX + fields["successor"])
                successors = await pipe.execute()
            now = self._clock.now()
            for (i, fields), current in zip(previous, successors, strict=True):
                until = float(fields.get("secret_expires_at") or 0)
                record = None if current.get("successor") or until <= now else _key_record(current, digests[i])
                records[i] = None if record is None else {**record, "secret_expires_at": until}
        return records

    async def _all_keys(self) -> list[dict[str, Any]]:
        digests: dict[str, str] = await self._redis.hgetall(KEY_IDS)
        if not digests:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for digest in digests.values():
                pipe.hgetall(KEY_PREFIX + digest)
            loaded = await pipe.execute()
        records = [_key_record(fields, digest) for digest, fields in zip(digests.values(), loaded, strict=True)]
        used: dict[str, str] = await self._redis.hgetall(LAST_USED)
        records = [None if r is None else {**r, "last_used_at": float(used[r["id"]]) if r["id"] in used else None}
                   for r in records]
        return sorted((r for r in records if r is not None), key=lambda r: (r["created_at"], r["id"]))

    async def list_keys(self) -> list[dict[str, Any]]:
        return [_public_key(r) for r in await self._all_keys()]

    async def revoke_key(self, id: str) -> dict[str, Any] | None:
        digest: str | None = await self._redis.hget(KEY_IDS, id)
        if digest is None or not await self._revoke_key(keys=[KEY_PREFIX + digest],
                                                        args=[repr(float(self._clock.now()))]):
            return None
        record = await self.find_key(digest)
        return None if record is None else _public_key(record)

    async def rotate_key(self, id: str, digest: str, prefix: str, valid_until: float) -> dict[str, Any] | None:
        old: str | None = await self._redis.hget(KEY_IDS, id)
        if old is None:
            return None
        grace_ms = int(float(valid_until) * 1000) if valid_until > self._clock.now() else 0
        if not await self._rotate_key(keys=[KEY_IDS, KEY_PREFIX + old, KEY_PREFIX + digest],
                                      args=[id, old, digest, prefix, repr(float(valid_until)), str(grace_ms)]):
            return None
        record = await self.find_key(digest)
        return None if record is None else _public_key(record)

    async def touch_keys(self, used: dict[str, float], digest: str | None = None) -> None:
        if used:
            await self._touch_keys(keys=[LAST_USED], args=[item for pair in used.items()
                                                          for item in (pair[0], repr(float(pair[1])))])

    async def update_key(self, id: str, policy: dict[str, Any]) -> dict[str, Any] | None:
        digest: str | None = await self._redis.hget(KEY_IDS, id)
        if digest is None or not await self._update_key(keys=[KEY_PREFIX + digest], args=[json.dumps(policy)]):
            return None
        record = await self.find_key(digest)
        return None if record is None else _public_key(record)

    async def count_active_keys(self) -> int:
        now = self._clock.now()
        return sum(1 for r in await self._all_keys()
                   if r["revoked_at"] is None and (r["expires_at"] is None or r["expires_at"] > now))

    # -- teams (one hash: team id -> the team as JSON) --------------------------------
    async def create_team(self, id: str, name: str, policy: dict[str, Any]) -> dict[str, Any] | None:
        record = {**policy, "id": id, "name": name, "created_at": self._clock.now()}
        if not await self._redis.hsetnx(TEAMS, id, json.dumps(record)):
            return None
        return record

    async def get_team(self, id: str) -> dict[str, Any] | None:
        raw = await self._redis.hget(TEAMS, id)
        return None if raw is None else dict(json.loads(raw))

    async def list_teams(self) -> list[dict[str, Any]]:
        records = [json.loads(raw) for raw in (await self._redis.hgetall(TEAMS)).values()]
        return sorted(records, key=lambda r: (r["created_at"], r["id"]))

    async def update_team(self, id: str, name: str, policy: dict[str, Any]) -> dict[str, Any] | None:
        old = await self.get_team(id)
        if old is None:
            return None
        record = {**policy, "id": id, "name": name, "created_at": old["created_at"]}
        # XX-like: written only while the team still exists (a concurrent delete wins).
        if not await self._replace_team(keys=[TEAMS], args=[id, json.dumps(record)]):
            return None
        return record

    async def delete_team(self, id: str) -> bool:
        return bool(await self._redis.hdel(TEAMS, id))

    # -- scoped admin credentials and the audit log --------------------------------------
    async def create_credential(self, id: str, digest: str, name: str, role: str,
                                team_id: str | None) -> dict[str, Any]:
        record = {"id": id, "digest": digest, "name": name, "role": role, "team_id": team_id,
                  "created_at": self._clock.now(), "revoked_at": None}
        if not await self._redis.hsetnx(CREDENTIALS, id, json.dumps(record)):
            raise ValueError(f"a credential with id {id!r} exists")
        return _public_credential(record)

    async def _all_credentials(self) -> list[dict[str, Any]]:
        records = [json.loads(raw) for raw in (await self._redis.hgetall(CREDENTIALS)).values()]
        return sorted(records, key=lambda r: (r["created_at"], r["id"]))

    async def list_credentials(self) -> list[dict[str, Any]]:
        return [_public_credential(r) for r in await self._all_credentials()]

    async def find_credential(self, digest: str) -> dict[str, Any] | None:
        # Few credentials and rare admin calls: a scan, no digest index to keep in step.
        found = next((r for r in await self._all_credentials() if r["digest"] == digest), None)
        return None if found is None else _public_credential(found)

    async def revoke_credential(self, id: str) -> dict[str, Any] | None:
        raw = await self._redis.hget(CREDENTIALS, id)
        if raw is None:
            return None
        record = json.loads(raw)
        if record.get("revoked_at") is None:
            record["revoked_at"] = self._clock.now()
            await self._redis.hset(CREDENTIALS, id, json.dumps(record))
        return _public_credential(record)

    async def log_audit(self, credential: str, method: str, path: str, status: int, keep_seconds: float) -> None:
        now = self._clock.now()
        entry = {"ts": now, "credential": credential, "method": method, "path": path, "status": int(status),
                 "n": secrets.token_hex(4)}  # two equal changes at one instant stay two members
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(AUDIT, {json.dumps(entry): now})
            pipe.zremrangebyscore(AUDIT, "-inf", now - float(keep_seconds))
            await pipe.execute()

    async def list_audit(self, limit: int = 100, credential: str | None = None) -> list[dict[str, Any]]:
        limit = max(1, min(int(limit), AUDIT_LIST_LIMIT))
        entries = [json.loads(raw) for raw in await self._redis.zrevrange(AUDIT, 0, -1 if credential else limit - 1)]
        picked = [e for e in entries if credential is None or e["credential"] == credential][:limit]
        return [{k: e[k] for k in ("ts", "credential", "method", "path", "status")} for e in picked]

    # -- signing nonces ------------------------------------------------------------------
    async def use_nonce(self, nonce: str, expires_at: float) -> bool:
        # PXAT is absolute: the same expiry whichever replica set it.
        stored = await self._redis.set(NONCE_PREFIX + nonce, "1", nx=True, pxat=max(1, int(float(expires_at) * 1000)))
        return bool(stored)

    # -- MCP tool pins (the SQL store's answers; a pin is one hash field) ---------------
    async def observe_mcp_tools(self, tools: dict[str, str]) -> dict[str, dict[str, Any]]:
        now = self._clock.now()
        names = list(tools)
        found = await self._redis.hmget(MCP_PINS, names) if names else []
        held: dict[str, dict[str, Any]] = {}
        for tool, raw in zip(names, found, strict=True):
            digest = tools[tool]
            if raw is None:
                pin = {"approved": digest, "seen": digest, "first_seen": now, "changed_at": None}
                await self._redis.hsetnx(MCP_PINS, tool, json.dumps(pin))
                continue
            pin = json.loads(raw)
            changed = pin["seen"] != digest
            if changed:
                pin.update(seen=digest, changed_at=now)
                await self._redis.hset(MCP_PINS, tool, json.dumps(pin))
            if pin["approved"] != digest:
                held[tool] = {"approved": pin["approved"], "seen": digest, "changed": changed}
        return held

    async def list_mcp_pins(self) -> list[dict[str, Any]]:
        pins = await self._redis.hgetall(MCP_PINS)
        return [{"tool": tool, **json.loads(raw)} for tool, raw in sorted(pins.items())]

    async def approve_mcp_tool(self, tool: str, seen: str) -> bool:
        raw = await self._redis.hget(MCP_PINS, tool)
        pin = json.loads(raw) if raw is not None else None
        if pin is None or pin["seen"] != seen:
            return False
        pin["approved"] = seen
        await self._redis.hset(MCP_PINS, tool, json.dumps(pin))
        return True

    # -- Realtime session slots and client secrets (realtime/store.py) -----------------------
    async def acquire_slot(self, key_id: str, session: str, limit: int, ttl: float) -> dict[str, Any]:
        now_ms = int(self._clock.now() * 1000)
        allowed, held, soonest = await self._acquire_slot(
            keys=[REALTIME_SLOTS_PREFIX + key_id], args=[now_ms, int(limit), session, int(float(ttl) * 1000)])
        if not allowed:
            return {"allowed": False, "held": int(held), "limit": limit,
                    "retry_after_seconds": max(1.0, (int(soonest) - now_ms) / 1000)}
        return {"allowed": True, "held": int(held), "limit": limit}

    async def renew_slot(self, key_id: str, session: str, ttl: float) -> bool:
        expires = int((self._clock.now() + float(ttl)) * 1000)
        return bool(await self._redis.zadd(REALTIME_SLOTS_PREFIX + key_id, {session: expires}, xx=True, ch=True))

    async def release_slot(self, key_id: str, session: str) -> bool:
        return bool(await self._redis.zrem(REALTIME_SLOTS_PREFIX + key_id, session))

    async def put_secret(self, digest: str, record: dict[str, Any], expires_at: float) -> None:
        await self._redis.set(REALTIME_SECRET_PREFIX + digest, json.dumps(record), pxat=int(float(expires_at) * 1000))

    async def take_secret(self, digest: str) -> dict[str, Any] | None:
        raw = await self._redis.getdel(REALTIME_SECRET_PREFIX + digest)  # read and used in one step
        return json.loads(raw) if raw else None

    # -- webhooks ------------------------------------------------------------------------
    async def create_webhook(self, id: str, url: str, events: list[str], secret: str) -> dict[str, Any]:
        record = {"id": id, "url": url, "events": events, "secret": secret, "created_at": self._clock.now()}
        if not await self._redis.hsetnx(WEBHOOKS, id, json.dumps(record)):
            raise ValueError(f"a webhook with id {id!r} exists")
        return _public_webhook(record)

    async def _all_webhooks(self) -> list[dict[str, Any]]:
        records = []
        for raw in (await self._redis.hgetall(WEBHOOKS)).values():
            try:
                records.append(json.loads(raw))
            except ValueError:
                continue
        return sorted(records, key=lambda r: (r["created_at"], r["id"]))

    async def list_webhooks(self) -> list[dict[str, Any]]:
        return [_public_webhook(r) for r in await self._all_webhooks()]

    async def delete_webhook(self, id: str) -> bool:
        return bool(await self._redis.hdel(WEBHOOKS, id))

    async def webhooks_for_event(self, event: str, webhook_id: str | None = None) -> list[dict[str, Any]]:
        return [{"id": r["id"], "url": r["url"], "secret": r["secret"]} for r in await self._all_webhooks()
                if r["id"] == webhook_id or (webhook_id is None and ("*" in r["events"] or event in r["events"]))]

    async def log_delivery(self, webhook_id: str, delivery_id: str, event: str, attempt: int,
                           status: int | None, error: str | None, delivered: bool) -> None:
        entry = {"delivery_id": delivery_id, "event": event, "attempt": attempt, "status": status,
                 "error": error, "ts": self._clock.now(), "delivered": bool(delivered)}
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lpush(DELIVERIES_PREFIX + webhook_id, json.dumps(entry))
            pipe.ltrim(DELIVERIES_PREFIX + webhook_id, 0, DELIVERY_LOG_LIMIT - 1)
            await pipe.execute()

    async def list_deliveries(self, webhook_id: str, limit: int = 100) -> list[dict[str, Any]]:
        raw = await self._redis.lrange(DELIVERIES_PREFIX + webhook_id, 0, max(1, min(limit, DELIVERY_LOG_LIMIT)) - 1)
        return [json.loads(item) for item in raw]


ENSURE_LOCK = "fg:keys:ensure"


async def ensure_shared_key(url: str, clock: Any) -> str | None:
    """At a replica's start without ``FLAREGATE_API_KEYS``: create one gateway key when the
    shared store has no usable one, and return it in plain (shown once). Replicas starting
    together take a short Redis lock, so only one of them creates it."""
    from ...security.access import KeyPolicy, new_key

    redis = connect(url)
    try:
        client = RedisSecurityClient(redis, clock)
        async with redis.lock(ENSURE_LOCK, timeout=10, blocking_timeout=15):
            if await client.count_active_keys():
                return None
            plain, key_id, digest, prefix = new_key()
            await client.create_key(key_id, digest, prefix, "local default", KeyPolicy().model_dump(), None)
            return plain
    finally:
        await redis.aclose()


async def move_local_records(url: str, clock: Any, store: Any) -> tuple[int, int]:
    """At a replica's start over Redis: move the keys and webhooks of its own SQLite store
    (made before Redis was configured) into Redis, and drop them from the file, so that a key
    revoked in Redis can never come back from a replica's file. Returns (keys, webhooks)
    moved; those Redis had already (by id or digest) stay as Redis has them."""
    records = store.export_records()
    teams = records.get("teams", [])
    if not records["keys"] and not records["webhooks"] and not teams:
        return 0, 0
    redis = connect(url)
    try:
        client = RedisSecurityClient(redis, clock)
        keys = [await client.adopt_key(r) for r in records["keys"]]
        hooks = [await client.adopt_webhook(r) for r in records["webhooks"]]
        for team in teams:  # a team already in Redis (by id) stays as Redis has it
            await redis.hsetnx(TEAMS, team["id"], json.dumps(team))
    finally:
        await redis.aclose()
    store.forget_records([r["id"] for r in records["keys"]], [r["id"] for r in records["webhooks"]],
                         tuple(t["id"] for t in teams))
    return sum(keys), sum(hooks)


async def run_security_op(url: str, clock: Any, op: str, args: dict[str, Any]) -> Any:
    """One security-store operation on a short-lived client (``flaregate keys`` over Redis)."""
    redis = connect(url)
    try:
        return await RedisSecurityClient(redis, clock).call(op, args)
    finally:
        await redis.aclose()


def uncached_key_lookups(settings: Any) -> Any:
    """The settings with stored-key lookups uncached per process: over Redis a revocation
    on one replica refuses on every replica at once, for one HGETALL per request (only for
    keys not in ``FLAREGATE_API_KEYS``). An operator who sets ``KEY_CACHE_SECONDS`` chooses
    that staleness instead of the round trip, and gets it."""
    if "key_cache_seconds" in settings.security.model_fields_set:
        return settings
    security = settings.security.model_copy(update={"key_cache_seconds": 0.0})
    return settings.model_copy(update={"security": security})


def _public_key(record: dict[str, Any]) -> dict[str, Any]:
    public = {k: record[k] for k in _KEY_FIELDS}
    if "last_used_at" in record:  # listings carry it, as the SQL store's do
        public["last_used_at"] = record["last_used_at"]
    return public


def _public_credential(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in ("id", "name", "role", "team_id", "created_at", "revoked_at")}


def _public_webhook(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "url": record["url"], "events": record["events"], "created_at": record["created_at"]}


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
