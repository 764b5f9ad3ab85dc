"""The documented health formula and the 'where the time goes' view."""

import pytest

from flaregate.hub.aggregator import MetricsHub
from flaregate.hub.health_score import health_score
from flaregate.hub.histogram import BOUNDS_MS, bucket_index, quantile
from flaregate.hub.time_budget import RECOMMENDATIONS, where_the_time_goes
from tests.support.fakes import FakeClock, MemorySql, RecordingBroadcaster, RecordingScheduler


@pytest.mark.parametrize(
    ("args", "score", "status"),
    [
        ((0, 0, None, 2000, 0, 0), 100, "healthy"),              # no traffic
        ((100, 0, 500.0, 2000, 100, 0), 100, "healthy"),         # all good
        ((100, 5, 4000.0, 2000, 100, 50), 50, "unhealthy"),      # E=0.5, L=0.5, A=0.5
        ((100, 1, 2000.0, 2000, 110, 10), 93, "healthy"),        # 0.5*0.9 + 0.25 + 0.25*10/11
        ((100, 20, 1000.0, 2000, 100, 0), 50, "unhealthy"),      # 20 % failures: E=0
        ((0, 0, None, 2000, 10, 10), 75, "degraded"),            # provider down, failover hid it
    ],
)
def test_health_score_formula(args, score, status):
    result = health_score(*args)
    assert result["score"] == score and result["status"] == status


async def test_provider_health_reflects_failed_attempts_hidden_by_failover():
    hub = MetricsHub(MemorySql(), FakeClock(), RecordingBroadcaster(), RecordingScheduler())
    ok = {"status": 200, "provider": "b", "model": "m", "latency_ms": 10.0,
          "upstream_attempts": [["a", False], ["b", True]]}
    await hub.record([ok] * 4)
    snapshot = hub.snapshot()
    assert snapshot["providers"]["b"]["health"] == 100
    assert snapshot["providers"]["a"]["availability"] == 0.0
    assert snapshot["providers"]["a"]["status"] == "degraded"
    assert snapshot["health"]["availability"] == 0.5 and snapshot["health"]["failure_rate"] == 0.0


def test_histogram_quantiles_interpolate_inside_buckets():
    assert bucket_index(0.1) == 0 and bucket_index(BOUNDS_MS[-1] + 1) == len(BOUNDS_MS)
    counts = {bucket_index(30.0): 50, bucket_index(300.0): 50}  # (25, 50] and (250, 500]
    assert 25 < quantile(counts, 0.5) <= 50
    assert 250 < quantile(counts, 0.95) <= 500
    assert quantile({}, 0.5) is None


def sample(total, **phases):
    return {"total_ms": total, "phases": phases}


def test_upstream_dominating_the_tail_is_named_with_a_recommendation():
    fast = [sample(20, parse=1, auth=1, ratelimit=2, upstream=15)] * 95
    slow = [sample(900, parse=1, auth=1, ratelimit=3, upstream=890, upstream_ttfb=850)] * 5
    view = where_the_time_goes(fast + slow)
    assert view["dominant"] == "upstream" and view["dominant_share"] > 0.9
    assert view["recommendation"] == RECOMMENDATIONS["upstream"]
    assert view["tail"] == 5 and view["samples"] == 100
    assert {row["phase"] for row in view["phases"]} >= {"parse", "upstream", "upstream_ttfb"}


def test_a_slow_rate_limiter_in_the_tail_is_named_even_when_upstream_is_larger_on_average():
    normal = [sample(100, ratelimit=1, upstream=95)] * 90
    stalled = [sample(400, ratelimit=350, upstream=45)] * 10
    view = where_the_time_goes(normal + stalled)
    assert view["dominant"] == "ratelimit"
    assert "rate-limit" in view["recommendation"]


def test_time_outside_every_phase_is_reported_as_other():
    view = where_the_time_goes([sample(50, parse=1, upstream=2)] * 10)
    assert view["dominant"] == "other"
    assert where_the_time_goes([])["dominant"] is None
