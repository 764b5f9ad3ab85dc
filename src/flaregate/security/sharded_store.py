"""The security store over N objects: gateway keys placed by digest, signing nonces by value.

A key lookup (every request with a stored key, past the isolate's ``KEY_CACHE_SECONDS``
cache) and a nonce check (every signed request) each go to one shard, chosen by
:func:`flaregate.sharding.shard_for`, so neither funnels into one object. Changing
``SECURITY_SHARDS`` loses nothing while ``SECURITY_SHARDS_PREVIOUS`` names the old count:
a key not found where it belongs now is looked up where the old count placed it, and a
nonce is recorded (and refused if seen) in both places, so a request signed before the
change cannot be replayed after it.

Administrative operations see every shard: listing and counting keys add the shards up,
and a revocation goes to every shard (the key is in one of them, wherever an earlier
count put it), so once the admin call returns, no shard serves that key. Webhooks and
their delivery log are few: they stay on the first shard.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..ports import SecurityStoreClient
from ..sharding import placements, shard_for

_FIRST_SHARD_OPS = frozenset({"webhooks.create", "webhooks.list", "webhooks.delete", "webhooks.for_event",
                              "deliveries.log", "deliveries.list"})


class ShardedSecurityStore:
    def __init__(self, shards: list[SecurityStoreClient], count: int, previous: int | None = None) -> None:
        """``shards``: a client per object, at least ``max(count, previous)`` of them."""
        self._shards = shards
        self._count = count
        self._previous = previous if previous and previous != count else None
        self._all = range(max(count, self._previous or 0))

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        if op == "keys.find":
            for index in placements(str(args.get("digest")), self._count, self._previous):
                found = await self._shards[index].call(op, args)
                if found is not None:
                    return found
            return None
        if op == "keys.create":
            return await self._shards[shard_for(str(args.get("digest")), self._count)].call(op, args)
        if op == "nonces.use":
            answers = [await self._shards[index].call(op, args)
                       for index in placements(str(args.get("nonce")), self._count, self._previous)]
            return all(bool(answer) for answer in answers)
        if op == "keys.revoke":
            revoked = await self._everywhere(op, args)
            return next((r for r in revoked if r is not None), None)
        if op == "keys.list":
            keys = {k["id"]: k for answer in await self._everywhere(op, args) for k in answer or []}
            return sorted(keys.values(), key=lambda k: (k.get("created_at") or 0, k["id"]))
        if op == "keys.count_active":
            return sum(int(n or 0) for n in await self._everywhere(op, args))
        if op in _FIRST_SHARD_OPS:
            return await self._shards[0].call(op, args)
        raise ValueError(f"unknown security-store operation {op!r}")

    async def _everywhere(self, op: str, args: dict[str, Any]) -> list[Any]:
        return list(await asyncio.gather(*(self._shards[i].call(op, args) for i in self._all)))
