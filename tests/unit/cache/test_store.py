"""The cache key specification (hypothesis properties) and the hot and cold tiers."""

import json

from hypothesis import assume, given
from hypothesis import strategies as st

from flaregate.cache.lru import MemoryLRU
from flaregate.cache.store import (
    IGNORED_FIELDS,
    KEY_PREFIX,
    CacheEntry,
    ResponseCache,
    TierLifetimes,
    cache_key,
    canonical,
    key_hash,
    store_key,
)
from tests.support.fakes import FakeClock, InlineTasks, MemoryKV

BODY = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0.2,
    "max_tokens": 10,
}
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=8)
# Every field a client can send that may change the output, plus provider-specific extras.
OUTPUT_FIELDS = ["model", "messages", "tools", "tool_choice", "temperature", "top_p", "seed", "max_tokens",
                 "max_completion_tokens", "response_format", "stop", "n", "logit_bias", "logprobs",
                 "top_logprobs", "presence_penalty", "frequency_penalty", "parallel_tool_calls", "prediction",
                 "reasoning_effort", "user", "num_ctx", "top_k", "extra_provider_param"]
bodies = st.fixed_dictionaries({"model": st.text(min_size=1, max_size=5),
                                "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]),
                                                                            "content": st.text(max_size=10)}),
                                                     min_size=1, max_size=3)},
                               optional={f: json_values for f in OUTPUT_FIELDS[2:]})


def shuffled(value, order_seed):
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: hash((k, order_seed)))
        return {k: shuffled(value[k], order_seed) for k in keys}
    if isinstance(value, list):
        return [shuffled(v, order_seed) for v in value]
    return value


@given(bodies, st.integers())
def test_field_order_at_any_depth_does_not_change_the_key(body, order_seed):
    assert cache_key("t", "r", shuffled(body, order_seed)) == cache_key("t", "r", body)


@given(bodies, st.integers(min_value=0, max_value=8), st.sampled_from([None, ",", ", "]))
def test_json_whitespace_does_not_change_the_key(body, indent, separator):
    separators = None if separator is None else (separator, ": ")
    text = json.dumps(body, indent=indent, separators=separators)
    assert cache_key("t", "r", json.loads(text)) == cache_key("t", "r", body)


def test_integral_floats_equal_their_ints_but_booleans_do_not():
    assert cache_key("t", "r", {**BODY, "temperature": 1.0}) == cache_key("t", "r", {**BODY, "temperature": 1})
    assert cache_key("t", "r", {**BODY, "n": True}) != cache_key("t", "r", {**BODY, "n": 1})


@given(bodies, st.sampled_from(OUTPUT_FIELDS), json_values)
def test_changing_any_output_affecting_field_changes_the_key(body, field, value):
    changed = {**body, field: value}
    assume(json.dumps(canonical(changed), sort_keys=True) != json.dumps(canonical(body), sort_keys=True))
    assert cache_key("t", "r", changed) != cache_key("t", "r", body)


@given(bodies, st.text(max_size=10))
def test_a_changed_message_deep_inside_changes_the_key(body, text):
    changed = json.loads(json.dumps(body))
    assume(changed["messages"][-1]["content"] != text)
    changed["messages"][-1]["content"] = text
    assert cache_key("t", "r", changed) != cache_key("t", "r", body)


@given(bodies, st.booleans(), json_values)
def test_stream_framing_fields_do_not_change_the_key(body, stream, options):
    assert IGNORED_FIELDS == {"stream", "stream_options"}
    framed = {**body, "stream": stream, "stream_options": options}
    assert cache_key("t", "r", framed) == cache_key("t", "r", body)


@given(st.text(max_size=12), st.text(max_size=12), bodies, bodies)
def test_two_tenants_never_share_a_key(a, b, body_a, body_b):
    assume(a != b)
    assert cache_key(a, "r", body_a) != cache_key(b, "r", body_b)


@given(st.text(max_size=6), st.text(max_size=6), st.text(max_size=6), st.text(max_size=6))
def test_tenant_route_namespace_and_generation_cannot_be_confused(t1, r1, t2, r2):
    # A separator trick ("a|b" + "c" vs "a" + "b|c") cannot make two parts collide.
    assume((t1, r1) != (t2, r2))
    assert cache_key(t1, r1, BODY) != cache_key(t2, r2, BODY)
    assert cache_key("t", "r", BODY, t1, r1) != cache_key("t", "r", BODY, t2, r2)


def test_namespace_and_generation_are_part_of_the_key():
    base = cache_key("t", "r", BODY)
    assert cache_key("t", "r", BODY, "default", "0") == base
    assert cache_key("t", "r", BODY, "other", "0") != base
    assert cache_key("t", "r", BODY, "default", "1") != base


def test_key_format_and_hash_round_trip():
    key = cache_key("t", "r", BODY)
    assert key.startswith(KEY_PREFIX) and len(key_hash(key)) == 64
    assert store_key(key_hash(key)) == key
    for bad in ("", "zz" * 32, key_hash(key).upper(), key_hash(key)[:-1], None, 5):
        assert store_key(bad) is None


# -- the hot and cold tiers (no warm tier; the three tiers are in test_tiers.py) ----------

def entry(clock, ttl=600, content="hello"):
    completion = {"id": "c1", "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                           "finish_reason": "stop"}], "usage": {"total_tokens": 7}}
    return CacheEntry.create("p", json.dumps(completion), completion, "json", clock.now(), ttl)


def two_tiers(memory_entries=10, memory_bytes=100_000):
    clock = FakeClock()
    kv = MemoryKV(clock)
    tasks = InlineTasks()
    cache = ResponseCache(kv, clock, tasks, MemoryLRU(clock, memory_entries, memory_bytes),
                          TierLifetimes(hot=60, warm=0, cold=86400, promote_hits=1))
    return clock, kv, tasks, cache


async def test_put_serves_from_memory_at_once_and_writes_the_store_in_the_background():
    clock, kv, tasks, cache = two_tiers()
    cache.put("k", entry(clock))
    assert "k" not in kv.data  # not yet: the store write is background work
    found, tier = await cache.get("k")
    assert tier == "hot" and found.tokens == 7
    await tasks.drain()
    assert json.loads(kv.data["k"][0])["provider"] == "p"


async def test_a_store_hit_is_promoted_into_memory():
    clock, kv, tasks, cache = two_tiers()
    cache.put("k", entry(clock))
    await tasks.drain()
    cache.memory.delete("k")
    assert (await cache.get("k"))[1] == "cold"
    assert (await cache.get("k"))[1] == "hot"


async def test_corrupt_entry_is_a_miss_is_deleted_and_is_logged(caplog):
    clock, kv, tasks, cache = two_tiers(memory_entries=0)
    good = entry(clock).to_text()
    for corrupt in ("{not json", good[: len(good) // 2], json.dumps([1]),
                    json.dumps({**json.loads(good), "body": "{trunc"}),
                    json.dumps({**json.loads(good), "body": '{"choices": 5}'}),
                    json.dumps({**json.loads(good), "v": 1}),
                    json.dumps({**json.loads(good), "expires_at": "soon"})):
        await kv.put("k", corrupt, 60)
        assert await cache.get("k") is None
        assert "k" not in kv.data
    assert cache.stats()["cold"]["corrupt_deleted"] == 7
    assert sum("corrupt cache entry" in r.message for r in caplog.records) == 7


async def test_a_store_that_is_down_degrades_to_no_cache():
    clock, kv, tasks, cache = two_tiers(memory_entries=0)
    kv.fail = True
    cache.put("k", entry(clock))
    await tasks.drain()  # the failed write is logged, never raised
    assert await cache.get("k") is None
    assert cache.stats()["cold"]["errors"] == 2


async def test_an_entry_expires_with_its_own_ttl_even_when_the_store_keeps_it_longer():
    clock, kv, tasks, cache = two_tiers(memory_entries=0)

    async def put_at_least_60(key, value, ttl):  # KV's minimum TTL, as the edge adapter clamps
        kv.data[key] = (value, clock.now() + max(60, ttl))

    kv.put = put_at_least_60
    cache.put("k", entry(clock, ttl=5))
    await tasks.drain()
    clock.advance(4)
    assert (await cache.get("k"))[1] == "cold"
    clock.advance(2)
    assert "k" in kv.data and await cache.get("k") is None


async def test_memory_keeps_an_entry_no_longer_than_the_hot_ttl():
    clock, kv, tasks, cache = two_tiers()
    cache.put("k", entry(clock, ttl=600))
    await tasks.drain()
    clock.advance(61)
    assert (await cache.get("k"))[1] == "cold"  # memory let it go after 60 s; the store still has it
