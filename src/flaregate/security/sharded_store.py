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

Teams are placed by their id (a key's team is looked up past the isolate's cache, so teams
spread as keys do); scoped admin credentials, the audit log and MCP tool pins are few and
stay on the first shard. A key changed by id (its policy, a rotation) is changed on every
shard that holds it. A rotation gives the key a new digest, which may place it on another
shard: the key is copied there (``keys.adopt``) and stays where it was too, where its
previous secret is still found during the grace period; every later change by id reaches
both copies. A key's last use is written where the digest it was found by places it.
A key's Realtime session slots live on the key id's shard (its count is one object's
count), an ephemeral client secret on its digest's: minted there, taken there (or where
the previous count placed it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..ports import SecurityStoreClient
from ..sharding import placements, shard_for

_FIRST_SHARD_OPS = frozenset({"webhooks.create", "webhooks.list", "webhooks.delete", "webhooks.for_event",
                              "deliveries.log", "deliveries.list",
                              "credentials.create", "credentials.list", "credentials.find", "credentials.revoke",
                              "audit.log", "audit.list",
                              "mcp_pins.observe", "mcp_pins.list", "mcp_pins.approve"})


class ShardedSecurityStore:
    def __init__(self, shards: list[SecurityStoreClient], count: int, previous: int | None = None) -> None:
        """``shards``: a client per object, at least ``max(count, previous)`` of them."""
        self._shards = shards
        self._count = count
        self._previous = previous if previous and previous != count else None
        self._all = range(max(count, self._previous or 0))

    async def _first_found(self, name: str, op: str, args: dict[str, Any]) -> Any:
        """The first answer not None from where ``name`` is placed now, then where it was."""
        for index in placements(name, self._count, self._previous):
            found = await self._shards[index].call(op, args)
            if found is not None:
                return found
        return None

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        if op == "keys.find":
            return await self._first_found(str(args.get("digest")), op, args)
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
            keys: dict[str, dict[str, Any]] = {}
            for answer in await self._everywhere(op, args):
                for key in answer or []:
                    seen = keys.setdefault(key["id"], key)
                    if (key.get("last_used_at") or 0) > (seen.get("last_used_at") or 0):  # a rotated key's copies
                        seen["last_used_at"] = key["last_used_at"]
            return sorted(keys.values(), key=lambda k: (k.get("created_at") or 0, k["id"]))
        if op == "keys.adopt":
            digest = str((args.get("record") or {}).get("digest"))
            return await self._shards[shard_for(digest, self._count)].call(op, args)
        if op == "keys.update":
            return _first(await self._everywhere(op, args))
        if op == "keys.rotate":
            return await self._rotate(args)
        if op == "keys.touch":
            found_by = args.get("digest")
            targets = placements(str(found_by), self._count, self._previous) if found_by else list(self._all)
            for index in targets:
                await self._shards[index].call(op, args)
            return None
        if op.startswith("teams."):
            return await self._team(op, args)
        if op == "keys.count_active":
            return sum(int(n or 0) for n in await self._everywhere(op, args))
        if op == "realtime.slots.acquire":
            return await self._shards[shard_for(str(args.get("key_id")), self._count)].call(op, args)
        if op in ("realtime.slots.renew", "realtime.slots.release"):  # a slot taken before a change of count
            done = False
            for index in placements(str(args.get("key_id")), self._count, self._previous):
                done = bool(await self._shards[index].call(op, args)) or done
            return done
        if op == "realtime.secrets.put":
            return await self._shards[shard_for(str(args.get("digest")), self._count)].call(op, args)
        if op == "realtime.secrets.take":
            return await self._first_found(str(args.get("digest")), op, args)
        if op in _FIRST_SHARD_OPS:
            return await self._shards[0].call(op, args)
        raise ValueError(f"unknown security-store operation {op!r}")

    async def _rotate(self, args: dict[str, Any]) -> Any:
        """Rotate every copy of the key; copy it to the shard its new digest places it on."""
        answers = await self._everywhere("keys.rotate", args)
        rotated = _first(answers)
        home = shard_for(str(args["digest"]), self._count)
        if rotated is not None and answers[home] is None:
            await self._shards[home].call("keys.adopt", {"record": {**rotated, "digest": args["digest"]}})
        return rotated

    async def _team(self, op: str, args: dict[str, Any]) -> Any:
        team_id = str(args.get("id"))
        if op == "teams.list":
            teams = {t["id"]: t for answer in await self._everywhere(op, args) for t in answer or []}
            return sorted(teams.values(), key=lambda t: (t.get("created_at") or 0, t["id"]))
        if op == "teams.delete":
            return any(bool(answer) for answer in await self._everywhere(op, args))
        if op == "teams.create":
            where = placements(team_id, self._count, self._previous)
            for index in where[1:]:  # a team made under the previous count is still that team
                if await self._shards[index].call("teams.get", {"id": team_id}) is not None:
                    return None
            return await self._shards[where[0]].call(op, args)
        if op in ("teams.get", "teams.update"):
            return await self._first_found(team_id, op, args)
        raise ValueError(f"unknown security-store operation {op!r}")

    async def _everywhere(self, op: str, args: dict[str, Any]) -> list[Any]:
        return list(await asyncio.gather(*(self._shards[i].call(op, args) for i in self._all)))


def _first(answers: list[Any]) -> Any:
    return next((answer for answer in answers if answer is not None), None)
