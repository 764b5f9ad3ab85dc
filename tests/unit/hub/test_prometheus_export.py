"""The hub's Prometheus text, read back with prometheus_client's own parser."""

from prometheus_client.parser import text_string_to_metric_families

from flaregate.hub.aggregator import MetricsHub
from tests.support.fakes import FakeClock, MemorySql, RecordingBroadcaster, RecordingScheduler


class FixedStats:
    def sample(self):
        return {"rss_bytes": 12345678.0}


def parse(text):
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(family, **labels):
    matches = [s.value for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())
               and s.name == family.name + ("_total" if family.type == "counter" else "")]
    return sum(matches)


async def test_counters_histograms_and_gauges_parse_and_match_the_events():
    hub = MetricsHub(MemorySql(), FakeClock(), RecordingBroadcaster(2), RecordingScheduler(),
                     host_stats=FixedStats())
    ok = {"status": 200, "provider": "up", "model": "gpt", "key_id": "key_a", "latency_ms": 120.0,
          "upstream_ms": 100.0, "cache": "MISS", "tokens_in": 7, "tokens_out": 3, "cost_usd": 0.5,
          "upstream_attempts": [["up", True]]}
    hit = {"status": 200, "provider": "up", "model": "gpt", "key_id": "key_a", "latency_ms": 2.0, "cache": "HIT"}
    weird = {"status": 404, "model": 'we"ird\\model\nname', "key_id": "key_b", "latency_ms": 1.0}
    limited = {"status": 429, "error_code": "rate_limit_exceeded", "model": "gpt", "key_id": "key_b",
               "latency_ms": 0.5}
    await hub.record([ok, ok, hit, weird, limited])
    families = parse(hub.prometheus())
    requests = families["flaregate_requests"]
    assert requests.type == "counter"
    assert value(requests, provider="up", model="gpt", key="key_a") == 3
    assert value(requests) == 5
    assert value(families["flaregate_cache_hits"], key="key_a") == 1
    assert value(families["flaregate_cache_misses"], key="key_a") == 2
    assert value(families["flaregate_rate_limited"], key="key_b") == 1
    assert value(families["flaregate_tokens"], direction="in") == 14
    assert value(families["flaregate_cost_usd"]) == 1.0
    assert value(families["flaregate_errors"], **{"class": "bad_request"}) == 1
    assert value(requests, model='we"ird\\model\nname') == 1  # escaping survives the round trip
    duration = families["flaregate_request_duration_seconds"]
    assert duration.type == "histogram"
    count = [s.value for s in duration.samples if s.name.endswith("_count") and s.labels["provider"] == "up"]
    assert count == [3]
    buckets = [s for s in duration.samples if s.name.endswith("_bucket") and s.labels["provider"] == "up"]
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)  # cumulative
    assert next(s.value for s in buckets if s.labels["le"] == "0.1") == 1  # the cache hit
    assert next(s.value for s in buckets if s.labels["le"] == "0.25") == 3
    overhead_sum = [s.value for s in families["flaregate_gateway_overhead_seconds"].samples
                    if s.name.endswith("_sum") and s.labels["provider"] == "up"]
    assert overhead_sum == [0.042]  # 20 + 20 + 2 ms
    assert value(families["flaregate_hub_subscribers"]) == 2
    assert value(families["flaregate_health_score"]) == 100
    assert value(families["flaregate_process_resident_memory_bytes"]) == 12345678
