"""The security store over N objects: a key or a nonce is placed by its hash and found
again after the count changes (the previous count read as a fallback); a revocation
reaches every shard; listing and counting add the shards up."""

from __future__ import annotations

from typing import Any

from flaregate.security.sharded_store import ShardedSecurityStore
from flaregate.security.store import SecurityStore
from flaregate.sharding import placements, shard_for, shard_name
from tests.support.fakes import FakeClock, MemorySql

T0 = 1_800_000_000.0


class Shard:
    def __init__(self, clock: FakeClock) -> None:
        self.store = SecurityStore(MemorySql(), clock)
        self.calls = 0

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        self.calls += 1
        return self.store.call(op, args)


def make(count: int, objects: list[Shard] | None = None, previous: int | None = None,
         clock: FakeClock | None = None) -> tuple[ShardedSecurityStore, list[Shard]]:
    clock = clock or FakeClock(T0)
    objects = objects or []
    while len(objects) < max(count, previous or 0):
        objects.append(Shard(clock))
    return ShardedSecurityStore(list(objects), count, previous), objects


async def create(store: ShardedSecurityStore, i: int) -> dict[str, Any]:
    return await store.call("keys.create", {"id": f"key_{i}", "digest": f"digest-{i}", "prefix": "fg-", "name": str(i),
                                            "policy": {}, "expires_at": None})


def test_rendezvous_moves_only_what_the_new_shard_wins():
    keys = [f"digest-{i}" for i in range(4000)]
    moved = [k for k in keys if shard_for(k, 4) != shard_for(k, 5)]
    assert all(shard_for(k, 5) == 4 for k in moved)  # every key that moved went to the new shard
    assert 0.15 < len(moved) / len(keys) < 0.25  # about 1/5
    spread = [sum(1 for k in keys if shard_for(k, 4) == s) for s in range(4)]
    assert min(spread) > 800
    assert shard_for("anything", 1) == 0 and shard_name(0) == "global" and shard_name(2) == "shard-2"
    assert placements("digest-1", 4) == [shard_for("digest-1", 4)]


async def test_keys_spread_and_survive_a_change_of_count_with_the_previous_one_read():
    three, objects = make(3)
    for i in range(60):
        await create(three, i)
    assert all(shard.store.count_active_keys() > 5 for shard in objects)  # spread, not funnelled
    five, objects = make(5, objects, previous=3)
    for i in range(60):
        found = await five.call("keys.find", {"digest": f"digest-{i}"})
        assert found is not None and found["id"] == f"key_{i}"
    for i in range(60, 80):  # new keys go to their place under the new count
        await create(five, i)
    assert (await five.call("keys.count_active", {})) == 80
    assert len(await five.call("keys.list", {})) == 80
    assert await five.call("keys.find", {"digest": "never"}) is None
    without_previous, _ = make(5, objects)
    lost = [i for i in range(60) if await without_previous.call("keys.find", {"digest": f"digest-{i}"}) is None]
    assert lost  # the fallback is what keeps them: without it the moved keys are not found


async def test_a_nonce_used_before_the_change_is_refused_after_it():
    three, objects = make(3)
    for i in range(40):
        assert await three.call("nonces.use", {"nonce": f"n{i}", "expires_at": T0 + 300}) is True
        assert await three.call("nonces.use", {"nonce": f"n{i}", "expires_at": T0 + 300}) is False
    five, _ = make(5, objects, previous=3)
    assert all([await five.call("nonces.use", {"nonce": f"n{i}", "expires_at": T0 + 300}) is False
                for i in range(40)])
    assert await five.call("nonces.use", {"nonce": "fresh", "expires_at": T0 + 300}) is True
    assert await five.call("nonces.use", {"nonce": "fresh", "expires_at": T0 + 300}) is False


async def test_a_revocation_reaches_every_shard_at_once():
    three, objects = make(3)
    for i in range(30):
        await create(three, i)
    five, objects = make(5, objects, previous=3)
    for i in range(30):
        revoked = await five.call("keys.revoke", {"id": f"key_{i}"})
        assert revoked is not None and revoked["revoked_at"] is not None
        assert (await five.call("keys.find", {"digest": f"digest-{i}"}))["revoked_at"] is not None
    assert await five.call("keys.count_active", {}) == 0
    assert await five.call("keys.revoke", {"id": "nope"}) is None


async def test_webhooks_stay_on_the_first_shard():
    store, objects = make(3)
    await store.call("webhooks.create", {"id": "wh1", "url": "https://example.com/h", "events": ["*"], "secret": "s"})
    assert [h["id"] for h in await store.call("webhooks.list", {})] == ["wh1"]
    assert objects[0].store.list_webhooks() and not objects[1].store.list_webhooks()


async def test_realtime_slots_count_per_key_on_one_shard_and_secrets_are_taken_once_across_a_change():
    three, objects = make(3)
    slot = {"limit": 2, "ttl": 30.0}
    keys = [f"key_{i}" for i in range(12)]
    for key in keys:
        for n in range(2):
            answer = await three.call("realtime.slots.acquire", {"key_id": key, "session": f"{key}-s{n}", **slot})
            assert answer["allowed"] is True
        refused = await three.call("realtime.slots.acquire", {"key_id": key, "session": f"{key}-s2", **slot})
        assert refused["allowed"] is False  # the key's two slots are counted in one object
    assert len({shard_for(k, 3) for k in keys}) > 1  # keys spread over the shards
    for i in range(12):
        await three.call("realtime.secrets.put", {"digest": f"ek-{i}", "record": {"i": i}, "expires_at": T0 + 60})
    five, _ = make(5, objects, previous=3)
    assert [await five.call("realtime.secrets.take", {"digest": f"ek-{i}"}) for i in range(12)] == \
        [{"i": i} for i in range(12)]
    assert await five.call("realtime.secrets.take", {"digest": "ek-0"}) is None  # single use
    moved = next(k for k in keys if shard_for(k, 5) != shard_for(k, 3))
    assert await five.call("realtime.slots.renew", {"key_id": moved, "session": f"{moved}-s0", "ttl": 30.0}) is True
    assert await five.call("realtime.slots.release", {"key_id": moved, "session": f"{moved}-s0"}) is True
    assert await five.call("realtime.slots.release", {"key_id": moved, "session": f"{moved}-s0"}) is False
