import json

from hypothesis import given
from hypothesis import strategies as st

from flaregate.cache import ResponseCache, cache_key
from tests.support.fakes import FakeClock, MemoryKV

BODY = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0.2,
    "max_tokens": 10,
}
values = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.booleans())


@given(st.permutations(list(BODY)))
def test_field_order_does_not_change_the_key(order):
    reordered = {k: BODY[k] for k in order}
    assert cache_key("t", "r", reordered) == cache_key("t", "r", BODY)


def test_whitespace_in_the_json_does_not_change_the_key():
    compact = json.loads(json.dumps(BODY, separators=(",", ":")))
    spaced = json.loads(json.dumps(BODY, indent=4))
    assert cache_key("t", "r", compact) == cache_key("t", "r", spaced)


@given(st.sampled_from(["temperature", "max_tokens", "seed", "top_p", "tools", "model"]), values)
def test_output_affecting_fields_change_the_key(field, value):
    changed = {**BODY, field: value}
    if changed != BODY:
        assert cache_key("t", "r", changed) != cache_key("t", "r", BODY)


@given(st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8))
def test_tenants_and_routes_never_share_a_key(a, b):
    if a != b:
        assert cache_key(a, "r", BODY) != cache_key(b, "r", BODY)
        assert cache_key("t", a, BODY) != cache_key("t", b, BODY)


async def test_corrupt_entry_is_a_miss_and_is_deleted():
    kv = MemoryKV(FakeClock())
    cache = ResponseCache(kv, 60)
    for corrupt in ("{not json", json.dumps({"body": "{trunc", "provider": "p"}), json.dumps([1])):
        await kv.put("k", corrupt, 60)
        assert await cache.get("k") is None
        assert "k" not in kv.data


async def test_a_store_that_is_down_degrades_to_no_cache():
    kv = MemoryKV(FakeClock())
    cache = ResponseCache(kv, 60)
    kv.fail = True
    await cache.put("k", b"{}", "p")
    assert await cache.get("k") is None


async def test_entries_expire_with_their_ttl():
    clock = FakeClock()
    kv = MemoryKV(clock)
    cache = ResponseCache(kv, 60)
    await cache.put("k", b'{"a": 1}', "p")
    assert (await cache.get("k"))["provider"] == "p"
    clock.advance(61)
    assert await cache.get("k") is None
