"""The semantic index in Redis, shared by every replica (Redis 7 here has no vector search,
so the search runs in the gateway, as everywhere). Per partition: a hash of codes
(``id -> "<code hex> <expires_at>"``), a hash of rows (``id -> {"v": vector hex, "f":
features}``), a sorted set of ids by insertion time (the size cap drops the oldest), and a
log of the changes (``+id code expires`` / ``-id``) with its generation (a random token).

Each replica mirrors a partition's codes in memory: a search reads only the log's entries
since its last one (usually none or a few) and the shortlist's rows, not the whole hash.
When the log grows past a few times the cap it is dropped and its generation changed; a
replica that sees another generation reads the hash again, with the log's length, in one
transaction. The operations and answers are the SQL index's (cache/semantic/index.py)."""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from typing import Any

from ...cache.semantic.index import Partition, radius, rank, shortlist
from ...ports import Clock

PREFIX = "fg:sem:"
_MIRRORED_PARTITIONS = 256  # partitions whose codes a replica keeps in memory (least recently used go)
_LOG_PER_CAP = 4  # the log is dropped past this many times the partition's cap


class _Mirror:
    """This replica's copy of one partition's codes, and how far in the log it has read."""

    __slots__ = ("generation", "offset", "part")

    def __init__(self) -> None:
        self.part = Partition()
        self.generation: str | None = None
        self.offset = 0

    def apply(self, change: str) -> None:
        """``+id code expires`` (added, or replaced) or ``-id`` (gone)."""
        if change.startswith("-"):
            self.part.remove(change[1:])
            return
        entry_id, _, rest = change[1:].partition(" ")
        code_hex, _, expires_at = rest.partition(" ")
        try:
            code, expires = int(code_hex, 16), float(expires_at)
        except ValueError:
            return
        self.part.remove(entry_id)
        self.part.append(entry_id, code, expires)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _generation(value: Any) -> str:
    return "0" if value is None else _text(value)  # none yet: the log was never dropped


class RedisSemanticIndex:
    def __init__(self, redis: Any, clock: Clock) -> None:
        self._redis = redis
        self._clock = clock
        self._mirrors: OrderedDict[str, _Mirror] = OrderedDict()

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        partition = str(args["partition"])
        codes, rows, order, log, generation = (f"{PREFIX}{partition}:{part}"
                                               for part in ("codes", "rows", "order", "log", "gen"))
        if op == "search":
            part = await self._synced(partition, codes, log, generation)
            return await self._search(part, rows, str(args["code"]), str(args["vector"]), int(args["limit"]),
                                      float(args.get("threshold", 0.0)))
        if op == "add":
            await self._add(codes, rows, order, log, generation, args)
            return {"ok": True}
        if op == "delete":
            entry_id = str(args["id"])
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(codes, entry_id).hdel(rows, entry_id).zrem(order, entry_id).rpush(log, f"-{entry_id}")
            await pipe.execute()
            return {"ok": True}
        raise ValueError(f"unknown semantic-index operation {op!r}")

    async def _synced(self, partition: str, codes_key: str, log_key: str, generation_key: str) -> Partition:
        """This replica's mirror of the partition, brought up to date: the log's new entries,
        or the whole hash again when the log was dropped since (another generation)."""
        mirror = self._mirrors.get(partition)
        if mirror is None:
            mirror = self._mirrors[partition] = _Mirror()
            while len(self._mirrors) > _MIRRORED_PARTITIONS:
                self._mirrors.popitem(last=False)
        self._mirrors.move_to_end(partition)
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(generation_key).lrange(log_key, mirror.offset, -1)
        generation, changes = await pipe.execute()
        if mirror.generation is None or _generation(generation) != mirror.generation:
            pipe = self._redis.pipeline(transaction=True)
            pipe.get(generation_key).hgetall(codes_key).llen(log_key)
            generation, raw, length = await pipe.execute()
            fresh = _Mirror()
            for entry_id, value in raw.items():
                fresh.apply(f"+{_text(entry_id)} {_text(value)}")
            fresh.part.compact()
            fresh.generation, fresh.offset = _generation(generation), int(length)
            self._mirrors[partition] = mirror = fresh
            return mirror.part
        for change in changes:
            mirror.apply(_text(change))
        mirror.offset += len(changes)
        return mirror.part

    async def _search(self, part: Partition, rows_key: str, code: str, vector: str, limit: int,
                      threshold: float) -> dict[str, Any]:
        query = bytes.fromhex(vector)
        ids = shortlist(part, int(code, 16), limit, self._clock.now(), radius(threshold, len(query)))
        fetched = await self._redis.hmget(rows_key, ids) if ids else []

        def rows(wanted: list[str]) -> dict[str, tuple[bytes, str]]:
            found = {}
            for entry_id, value in zip(wanted, fetched, strict=True):
                if value is None:
                    continue
                try:
                    row = json.loads(value)
                    found[entry_id] = (bytes.fromhex(row["v"]), json.dumps(row["f"]))
                except (ValueError, KeyError, TypeError):
                    continue
            return found

        return {"matches": rank(ids, rows, query, threshold), "size": len(part.ids)}

    async def _add(self, codes: str, rows: str, order: str, log: str, generation: str, args: dict[str, Any]) -> None:
        entry_id, expires_at = str(args["id"]), float(args["expires_at"])
        now = self._clock.now()
        lifetime = max(1, int(expires_at - now) + 1)
        features = json.loads(str(args["features"]))
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(codes, entry_id, f"{args['code']} {expires_at}")
        pipe.hset(rows, entry_id, json.dumps({"v": str(args["vector"]), "f": features}))
        pipe.zadd(order, {entry_id: now})
        pipe.rpush(log, f"+{entry_id} {args['code']} {expires_at}")
        # A new partition (or one whose keys expired and came back) gets a new generation, so
        # no replica reads its log from an offset that belonged to the old one.
        pipe.set(generation, secrets.token_hex(8), nx=True)
        for key in (codes, rows, order, log, generation):  # the partition lives as long as its youngest entry
            pipe.expire(key, lifetime, gt=True)
            pipe.expire(key, lifetime, nx=True)
        pipe.zcard(order)
        pipe.llen(log)
        results = await pipe.execute()
        size, length, cap = int(results[-2]), int(results[-1]), int(args["max_entries"])
        if size > cap:
            oldest = await self._redis.zpopmin(order, size - cap)
            drop = [_text(member) for member, _ in oldest]
            if drop:
                pipe = self._redis.pipeline(transaction=True)
                pipe.hdel(codes, *drop).hdel(rows, *drop).rpush(log, *(f"-{d}" for d in drop))
                await pipe.execute()
        if length > _LOG_PER_CAP * max(cap, 256):  # replicas read the hash again, once
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(log).set(generation, secrets.token_hex(8), ex=lifetime)
            await pipe.execute()
