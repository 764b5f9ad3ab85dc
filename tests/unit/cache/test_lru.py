"""The in-process tier: bounds in entries and bytes, LRU order, expiry, statistics."""

from hypothesis import given
from hypothesis import strategies as st

from flaregate.cache.lru import MemoryLRU
from tests.support.fakes import FakeClock


def test_least_recently_used_goes_first_when_entries_overflow():
    lru = MemoryLRU(FakeClock(), max_entries=2, max_bytes=1000)
    lru.put("a", 1, 10, 60)
    lru.put("b", 2, 10, 60)
    assert lru.get("a") == 1  # a is now more recent than b
    lru.put("c", 3, 10, 60)
    assert "b" not in lru and lru.get("a") == 1 and lru.get("c") == 3
    assert lru.stats()["evictions"] == 1


def test_bytes_bound_evicts_as_many_as_needed_and_rejects_what_never_fits():
    lru = MemoryLRU(FakeClock(), max_entries=100, max_bytes=100)
    for name in "abcd":
        lru.put(name, name, 25, 60)
    lru.put("big", "x", 60, 60)
    assert [k for k in "abcd" if k in lru] == ["d"] and "big" in lru and lru.bytes == 85
    assert lru.put("huge", "x", 101, 60) is False and "huge" not in lru
    assert lru.stats()["rejected"] == 1 and lru.stats()["evictions"] == 3


def test_entries_expire_and_count_as_misses():
    clock = FakeClock()
    lru = MemoryLRU(clock, 10, 1000)
    lru.put("a", 1, 10, 5)
    clock.advance(4.9)
    assert lru.get("a") == 1
    clock.advance(0.2)
    assert lru.get("a") is None and lru.bytes == 0
    stats = lru.stats()
    assert (stats["hits"], stats["misses"], stats["expirations"], stats["hit_rate"]) == (1, 1, 1, 0.5)


def test_replacing_a_key_keeps_the_byte_count_exact():
    lru = MemoryLRU(FakeClock(), 10, 1000)
    lru.put("a", 1, 100, 60)
    lru.put("a", 2, 30, 60)
    assert lru.bytes == 30 and len(lru) == 1 and lru.get("a") == 2


def test_a_zero_bound_turns_the_tier_off():
    lru = MemoryLRU(FakeClock(), 0, 1000)
    assert not lru.enabled and lru.put("a", 1, 1, 60) is False and lru.get("a") is None


operations = st.lists(st.tuples(st.sampled_from(["put", "get", "delete", "tick"]),
                                st.sampled_from("abcdefgh"), st.integers(0, 70)), max_size=60)


@given(st.integers(1, 5), st.integers(1, 150), operations)
def test_bounds_always_hold_and_the_latest_put_that_fits_is_kept(max_entries, max_bytes, ops):
    clock = FakeClock()
    lru = MemoryLRU(clock, max_entries, max_bytes)
    for op, key, size in ops:
        if op == "put":
            kept = lru.put(key, size, size, 10)
            assert kept == (size <= max_bytes)
            assert (key in lru) == kept
        elif op == "get":
            lru.get(key)
        elif op == "delete":
            lru.delete(key)
        else:
            clock.advance(size / 10)
        assert len(lru) <= max_entries and 0 <= lru.bytes <= max_bytes
        assert lru.bytes == sum(slot.size for slot in lru._slots.values())
