"""N hub shards behind the sharded client answer as one hub does on the same events:
/v1/analytics, /metrics, the snapshot, /health and /v1/logs pages; a shard that fails or
hangs never holds a publish up, its batches wait in a bounded buffer and the drops are
counted; a read with a shard away is partial and says so."""

from __future__ import annotations

import asyncio
import json
import math
import random
from typing import Any

import pytest

from flaregate.hub.aggregator import MetricsHub
from flaregate.hub.shards import InProcessShard, ShardedHub, ShardsUnavailable
from flaregate.hub.views import parse_prometheus
from tests.support.fakes import FakeClock, MemorySql, RecordingBroadcaster, RecordingScheduler

T0 = 1_800_000_000.0


class JsonShard(InProcessShard):
    """An in-process hub reached as a Durable Object is: every argument and answer through JSON."""

    def __init__(self, hub: MetricsHub) -> None:
        super().__init__(hub)
        self.fail = False
        self.hang: asyncio.Event | None = None
        self.published = 0

    async def publish(self, events: list[dict[str, Any]]) -> None:
        if self.hang is not None:
            await self.hang.wait()
        if self.fail:
            raise ConnectionError("shard down")
        self.published += 1
        await super().publish(json.loads(json.dumps(events)))

    async def parts(self, view: str, arg: str | None = None) -> dict[str, Any]:
        if self.fail:
            raise ConnectionError("shard down")
        return json.loads(json.dumps(await super().parts(view, arg)))

    async def logs(self, params: dict[str, str]) -> dict[str, Any]:
        if self.fail:
            raise ConnectionError("shard down")
        return json.loads(json.dumps(await super().logs(dict(params))))


def hub(clock: FakeClock) -> MetricsHub:
    return MetricsHub(MemorySql(), clock, RecordingBroadcaster(0), RecordingScheduler())


def events(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        status = rng.choice([200] * 8 + [429, 502])
        provider = rng.choice(["openai", "anthropic", "mock"])
        out.append({
            "ts": T0 - 3000 + i * 0.7, "request_id": f"req_{i:024x}", "trace_id": f"{i:032x}", "status": status,
            "provider": provider, "model": rng.choice(["gpt", "claude", "mini"]),
            "key_id": rng.choice(["key_a", "key_b", "key_c", None]),
            "latency_ms": round(rng.uniform(5, 3000), 3), "upstream_ms": round(rng.uniform(1, 5), 3),
            "ttft_ms": round(rng.uniform(1, 900), 3) if i % 3 == 0 else None,
            "cache": rng.choice(["HIT", "MISS", None]), "stream": i % 3 == 0,
            "tokens_in": rng.randint(0, 900), "tokens_out": rng.randint(0, 400),
            "cost_usd": round(rng.uniform(0, 0.01), 9),
            "error_class": {429: "rate_limited", 502: "upstream_5xx"}.get(status),
            "upstream_attempts": [[provider, status == 200]],
            "tags": {"team": rng.choice(["red", "blue"])}, "metric_tags": {"team": rng.choice(["red", "blue"])},
            "phases": {"auth": 0.01, "upstream": 1.5},
        })
    return out


def close(a: Any, b: Any, path: str = "") -> None:
    """Equal, floats to 1e-9 relative (float sums depend on the order of addition)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), (path, set(a) ^ set(b))
        for key in a:
            close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (path, a, b)
    else:
        assert a == b, (path, a, b)


@pytest.fixture
async def rigs():
    clock = FakeClock(T0)
    one = hub(clock)
    shards = [JsonShard(hub(clock)) for _ in range(3)]
    sharded = ShardedHub(shards)
    batches = events(900)
    for start in range(0, len(batches), 50):
        batch = batches[start:start + 50]
        await one.record(json.loads(json.dumps(batch)))
        await sharded.publish(batch)
    assert all(shard.published == 6 for shard in shards)  # round robin: every shard holds a third
    return one, sharded, shards, clock


async def test_merged_analytics_equal_one_hubs_on_the_same_events(rigs):
    one, sharded, _, _ = rigs
    merged = await sharded.analytics(None)
    assert merged.pop("shards") == {"answered": 3, "of": 3}
    single = json.loads(json.dumps(one.analytics(None)))
    merged = json.loads(json.dumps(merged))
    assert single["windows"]["1h"]["requests"] == 900
    close(merged, single)
    # Percentiles come from the merged histograms: the same buckets, so the same values.
    assert merged["windows"]["24h"]["by_model"]["gpt"]["latency_ms"]["total"]["p95"] == \
        single["windows"]["24h"]["by_model"]["gpt"]["latency_ms"]["total"]["p95"]


async def test_merged_metrics_equal_one_hubs_on_the_same_events(rigs):
    one, sharded, _, _ = rigs
    merged = parse_prometheus(await sharded.prometheus())
    single = parse_prometheus(one.prometheus())
    assert merged.pop("flaregate_hub_shards") == 3 and merged.pop("flaregate_hub_shards_answered") == 3
    # The one per-store setting that adds up: three stores hold three budgets.
    assert merged.pop("flaregate_request_log_budget_bytes") == 3 * single.pop("flaregate_request_log_budget_bytes")
    for key in set(merged) | set(single):
        if key.startswith("flaregate_request_log_bytes"):  # per-row size estimates: labels differ per store
            assert (merged.pop(key) > 0) == (single.pop(key) > 0)
    assert merged.keys() == single.keys()
    for key, value in single.items():
        assert math.isclose(merged[key], value, rel_tol=1e-9, abs_tol=1e-9), key
    assert single['flaregate_requests_total{provider="mock",model="gpt",key="key_a"}'] > 0


async def test_merged_snapshot_and_health_equal_one_hubs(rigs):
    one, sharded, _, _ = rigs
    snapshot = json.loads(json.dumps(await sharded.snapshot()))
    assert snapshot.pop("shards") == {"answered": 3, "of": 3}
    close(snapshot, json.loads(json.dumps(one.snapshot())))
    health = await sharded.health()
    assert health["health"] == one.health_summary()["health"]
    assert health["request_logs"]["records"] == one.logs.usage()["records"] == 900


async def test_merged_log_pages_cover_every_record_once_newest_first(rigs):
    one, sharded, _, _ = rigs
    for params in ({"limit": "37"}, {"limit": "50", "status": "5xx"}, {"limit": "200", "model": "gpt"}):
        seen, cursor = [], None
        while True:
            page = await sharded.logs({**params, **({"cursor": cursor} if cursor else {})})
            seen += [r["request_id"] for r in page["data"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        expected = []
        cursor = None
        while True:
            page = one.logs.query({**params, **({"cursor": cursor} if cursor else {})})
            expected += [r["request_id"] for r in page["data"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == expected and len(seen) == len(set(seen)) > 0
    record = await sharded.logs({"id": f"req_{5:024x}"})
    assert record["record"]["request_id"] == f"req_{5:024x}"
    assert (await sharded.logs({"cursor": "junk"}))["error"]["param"] == "cursor"
    assert (await sharded.logs({"status": "abc"}))["error"]["param"] == "status"


async def test_a_failing_shard_buffers_then_drops_and_counts_and_reads_say_partial():
    clock = FakeClock(T0)
    shards = [JsonShard(hub(clock)) for _ in range(2)]
    sharded = ShardedHub(shards, buffer_batches=2, timeout=0.05)
    sharded._next = 0
    shards[1].fail = True
    batch = events(10)
    for _ in range(8):  # four to each shard: shard 1 keeps two, drops two (20 events)
        await sharded.publish(batch)
    assert sharded.buffered() == 2 and sharded.dropped_total == 20
    partial = await sharded.analytics("1h")
    assert partial["shards"] == {"answered": 1, "of": 2}
    assert partial["windows"]["1h"]["requests"] == 40
    shards[1].fail = False
    await sharded.publish(batch)  # to shard 0, carrying the count of what was dropped
    await sharded.publish(batch)  # to shard 1: then its two waiting batches
    assert sharded.buffered() == 0
    health = await sharded.health()
    assert health["analytics_dropped"] == 20
    assert parse_prometheus(await sharded.prometheus())["flaregate_analytics_events_dropped_total"] == 20
    assert (await sharded.analytics("1h"))["windows"]["1h"]["requests"] == 40 + 10 + 10 + 20
    for shard in shards:
        shard.fail = True
    with pytest.raises(ShardsUnavailable):
        await sharded.analytics(None)


async def test_a_hung_shard_never_holds_a_publish_up():
    clock = FakeClock(T0)
    shards = [JsonShard(hub(clock)) for _ in range(2)]
    shards[0].hang = asyncio.Event()  # never set: the shard never answers
    sharded = ShardedHub(shards, timeout=0.05)
    sharded._next = 0
    await sharded.publish(events(5))  # returns once the timeout passes, the batch kept
    assert sharded.buffered() == 1
    await sharded.publish(events(5))
    assert shards[1].published == 1
