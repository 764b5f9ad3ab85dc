"""The three cache tiers on a fake clock: lifetimes, promotion by access count, and writes
going only to the tiers an entry's TTL reaches (KV writes avoided)."""

import json
import sys

from flaregate.cache.lru import MemoryLRU
from flaregate.cache.store import CacheEntry, ResponseCache, TierLifetimes
from tests.support.fakes import FakeClock, InlineTasks, MemoryKV

SEED = TierLifetimes(hot=300, warm=3600, cold=86400, promote_hits=2)


def entry(clock, ttl):
    completion = {"id": "c1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                           "finish_reason": "stop"}]}
    return CacheEntry.create("p", json.dumps(completion), completion, "json", clock.now(), ttl)


def three_tiers(lifetimes=SEED):
    clock = FakeClock()
    warm, cold, tasks = MemoryKV(clock), MemoryKV(clock), InlineTasks()
    cache = ResponseCache(cold, clock, tasks, MemoryLRU(clock, 100, 1_000_000), lifetimes, warm)
    return clock, warm, cold, tasks, cache


async def tier(cache, key="k"):
    found = await cache.get(key)
    return None if found is None else found[1]


async def test_the_seed_lifetimes_are_the_defaults():
    assert TierLifetimes() == SEED


async def test_a_short_entry_goes_to_hot_and_warm_only_and_counts_a_kv_write_avoided():
    clock, warm, cold, tasks, cache = three_tiers()
    assert cache.put("k", entry(clock, ttl=600)) == ("hot", "warm")
    await tasks.drain()
    assert "k" in warm.data and "k" not in cold.data
    assert cache.stats()["cold"]["writes_avoided"] == 1
    assert warm.data["k"][1] == clock.now() + 600  # the warm tier keeps it for its whole TTL


async def test_a_long_entry_reaches_the_cold_tier_and_each_tier_keeps_it_for_its_lifetime():
    clock, warm, cold, tasks, cache = three_tiers()
    assert cache.put("k", entry(clock, ttl=7200)) == ("hot", "warm", "cold")
    await tasks.drain()
    assert warm.data["k"][1] == clock.now() + 3600 and cold.data["k"][1] == clock.now() + 7200
    assert cache.stats()["cold"]["writes_avoided"] == 0
    assert await tier(cache) == "hot"
    clock.advance(301)
    assert await tier(cache) == "warm"  # hot let it go after 5 minutes
    clock.advance(3300)
    assert await tier(cache) == "cold"  # warm after an hour
    clock.advance(3600)
    assert await tier(cache) is None  # its own TTL (2 h) is over


async def test_an_entry_lives_no_longer_than_the_longest_tier():
    clock, warm, cold, tasks, cache = three_tiers()
    cache.put("k", entry(clock, ttl=30 * 86400))
    await tasks.drain()
    assert cold.data["k"][1] == clock.now() + 86400
    clock.advance(86400)
    assert await tier(cache) is None


async def test_a_warm_hit_promotes_to_hot_only_when_read_often_within_the_hot_window():
    clock, warm, cold, tasks, cache = three_tiers()
    cache.put("k", entry(clock, ttl=3000))
    await tasks.drain()
    clock.advance(301)  # out of hot; its reads were long ago
    assert await tier(cache) == "warm"  # one read: not promoted
    clock.advance(400)  # more than a hot lifetime later
    assert await tier(cache) == "warm"  # still one read in the window
    clock.advance(10)
    assert await tier(cache) == "warm"  # the second read in the window promotes it...
    assert await tier(cache) == "hot"  # ...so the next one is served hot


async def test_an_entry_read_often_while_hot_goes_straight_back_to_hot():
    clock, warm, cold, tasks, cache = three_tiers()
    cache.put("k", entry(clock, ttl=3000))
    await tasks.drain()
    clock.advance(250)
    assert await tier(cache) == "hot"
    clock.advance(60)  # the hot copy expired at 300 s; the last read was 60 s ago
    assert await tier(cache) == "warm"
    assert await tier(cache) == "hot"


async def test_a_cold_hit_is_copied_to_warm_for_the_rest_of_its_life_capped_by_the_warm_lifetime():
    clock, warm, cold, tasks, cache = three_tiers(TierLifetimes(hot=300, warm=3600, cold=86400, promote_hits=1))
    cache.put("k", entry(clock, ttl=20000))
    await tasks.drain()
    clock.advance(5000)  # out of hot and warm
    assert await tier(cache) == "cold"
    await tasks.drain()
    assert warm.data["k"][1] == clock.now() + 3600
    assert await tier(cache) == "hot"  # promote_hits=1: the cold read promoted it too
    cache.memory.delete("k")
    assert await tier(cache) == "warm"


async def test_with_hot_off_hits_come_from_warm():
    clock, warm, cold, tasks, cache = three_tiers(TierLifetimes(hot=0, warm=3600, cold=86400))
    assert cache.put("k", entry(clock, ttl=600)) == ("warm",)
    await tasks.drain()
    assert [await tier(cache) for _ in range(3)] == ["warm"] * 3


async def test_without_a_warm_tier_the_cold_one_takes_what_outlives_hot():
    clock, warm, cold, tasks, cache = three_tiers(TierLifetimes(hot=300, warm=0, cold=86400))
    assert cache.put("short", entry(clock, ttl=200)) == ("hot",)
    assert cache.put("long", entry(clock, ttl=400)) == ("hot", "cold")
    assert cache.stats()["warm"]["enabled"] is False


async def test_a_warm_tier_that_is_down_falls_through_to_cold():
    clock, warm, cold, tasks, cache = three_tiers()
    cache.put("k", entry(clock, ttl=7200))
    await tasks.drain()
    cache.memory.delete("k")
    warm.fail = True
    assert await tier(cache) == "cold"
    assert cache.stats()["warm"]["errors"] == 1


async def test_a_cold_tier_turned_off_is_neither_written_nor_read():
    clock, warm, cold, tasks, cache = three_tiers(TierLifetimes(hot=300, warm=3600, cold=0))
    assert cache.put("k", entry(clock, ttl=7200)) == ("hot", "warm")
    await tasks.drain()
    assert "k" not in cold.data
    stale = entry(clock, ttl=7200)  # left in the store from before the tier was turned off
    cold.data["old"] = (stale.to_text(), clock.now() + 7200)
    assert await cache.get("old") is None
    assert cache.stats()["cold"]["misses"] == 0  # not read at all


async def test_delete_removes_the_entry_from_every_tier():
    clock, warm, cold, tasks, cache = three_tiers()
    cache.put("k", entry(clock, ttl=7200))
    await tasks.drain()
    await cache.delete("k")
    assert "k" not in warm.data and "k" not in cold.data and await tier(cache) is None


class CountingKV(MemoryKV):
    def __init__(self, clock):
        super().__init__(clock)
        self.reads = 0

    async def get(self, key):
        self.reads += 1
        return await super().get(key)


async def test_a_request_reads_only_the_tiers_its_own_ttl_writes():
    clock = FakeClock()
    warm, cold, tasks = MemoryKV(clock), CountingKV(clock), InlineTasks()
    cache = ResponseCache(cold, clock, tasks, MemoryLRU(clock, 100, 1_000_000), SEED, warm)
    assert await cache.get("k", ttl=300) is None and cold.reads == 0  # fits warm: never written cold
    assert await cache.get("k", ttl=3600) is None and cold.reads == 0
    assert await cache.get("k", ttl=7200) is None and cold.reads == 1  # would be written cold: read it
    assert await cache.get("k") is None and cold.reads == 2  # no TTL given: every tier
    cache.put("long", entry(clock, ttl=20000))
    await tasks.drain()
    clock.advance(5000)  # only the cold tier still has it
    assert await cache.get("long", ttl=300) is None  # a short-TTL request does not see a long-TTL entry
    assert (await cache.get("long", ttl=20000))[1] == "cold"


def _deep_size(value, seen):
    """The bytes an object graph takes (sys.getsizeof of each object once)."""
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in value.items())
    elif isinstance(value, list | tuple):
        size += sum(_deep_size(v, seen) for v in value)
    elif hasattr(value, "__slots__"):
        size += sum(_deep_size(getattr(value, name), seen) for name in value.__slots__ if hasattr(value, name))
    return size


def test_the_memory_tier_counts_what_its_entries_really_take():
    """CACHE_MEMORY_MAX_BYTES bounds the hot tier's real size: what its entries take (keys,
    slots, entries and all they hold, as read from a tier) stays within a quarter of what
    the tier counts, for small answers and large (it once held the parsed completion too,
    two to six times the text it counted)."""
    for words in (5, 50, 500):
        clock = FakeClock()
        cache = ResponseCache(MemoryKV(clock), clock, InlineTasks(), MemoryLRU(clock, 10_000, 1 << 40), SEED)
        completion = {"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": {
            "role": "assistant", "content": " ".join(f"word{j}" for j in range(words))}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": words, "total_tokens": 3 + words}}
        for i in range(200):
            made = CacheEntry.create("p", json.dumps({**completion, "id": f"c{i}"}), completion, "json",
                                     clock.now(), 60)
            cache.put(f"fg:c2:{i:064x}", CacheEntry.from_text(made.to_text()))  # as a tier read makes it
        seen: set[int] = set()
        slots = cache.memory._slots
        real = sum(_deep_size(key, seen) + _deep_size(slot, seen) for key, slot in slots.items())
        real += 100 * len(slots)  # the index's own entry per key (an OrderedDict node)
        counted = cache.memory.bytes
        assert counted <= real * 1.25 and real <= counted * 1.25, (words, counted, real)
