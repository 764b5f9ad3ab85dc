"""The semantic index in Redis, shared by every replica (Redis 7 here has no vector search,
so the search runs in the gateway, as everywhere). Per partition: a hash of codes
(``id -> "<code hex> <expires_at>"``), a hash of rows (``id -> {"v": vector hex, "f":
features}``) and a sorted set of ids by insertion time (the size cap drops the oldest).
The operations and answers are the SQL index's (cache/semantic/index.py)."""

from __future__ import annotations

import json
from typing import Any

from ...cache.semantic.index import radius, rank, shortlist
from ...ports import Clock

PREFIX = "fg:sem:"


class RedisSemanticIndex:
    def __init__(self, redis: Any, clock: Clock) -> None:
        self._redis = redis
        self._clock = clock

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        partition = str(args["partition"])
        codes, rows, order = (f"{PREFIX}{partition}:{part}" for part in ("codes", "rows", "order"))
        if op == "search":
            return await self._search(codes, rows, str(args["code"]), str(args["vector"]), int(args["limit"]),
                                      float(args.get("threshold", 0.0)))
        if op == "add":
            await self._add(codes, rows, order, args)
            return {"ok": True}
        if op == "delete":
            entry_id = str(args["id"])
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(codes, entry_id).hdel(rows, entry_id).zrem(order, entry_id)
            await pipe.execute()
            return {"ok": True}
        raise ValueError(f"unknown semantic-index operation {op!r}")

    async def _search(self, codes_key: str, rows_key: str, code: str, vector: str, limit: int,
                      threshold: float) -> dict[str, Any]:
        raw = await self._redis.hgetall(codes_key)
        ids_all: list[str] = []
        codes: list[int] = []
        expires: list[float] = []
        for entry_id, value in raw.items():
            text = value.decode() if isinstance(value, bytes) else str(value)
            code_hex, _, expires_at = text.partition(" ")
            try:
                parsed = int(code_hex, 16), float(expires_at)
            except ValueError:
                continue
            ids_all.append(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
            codes.append(parsed[0])
            expires.append(parsed[1])
        query = bytes.fromhex(vector)
        ids = shortlist(ids_all, codes, expires, int(code, 16), limit, self._clock.now(),
                        radius(threshold, len(query)))
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

        return {"matches": rank(ids, rows, query, threshold), "size": len(codes)}

    async def _add(self, codes: str, rows: str, order: str, args: dict[str, Any]) -> None:
        entry_id, expires_at = str(args["id"]), float(args["expires_at"])
        now = self._clock.now()
        lifetime = max(1, int(expires_at - now) + 1)
        features = json.loads(str(args["features"]))
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(codes, entry_id, f"{args['code']} {expires_at}")
        pipe.hset(rows, entry_id, json.dumps({"v": str(args["vector"]), "f": features}))
        pipe.zadd(order, {entry_id: now})
        for key in (codes, rows, order):  # the partition lives as long as its youngest entry
            pipe.expire(key, lifetime, gt=True)
            pipe.expire(key, lifetime, nx=True)
        pipe.zcard(order)
        results = await pipe.execute()
        size, cap = int(results[-1]), int(args["max_entries"])
        if size > cap:
            oldest = await self._redis.zpopmin(order, size - cap)
            drop = [member for member, _ in oldest]
            if drop:
                pipe = self._redis.pipeline(transaction=True)
                pipe.hdel(codes, *drop).hdel(rows, *drop)
                await pipe.execute()
