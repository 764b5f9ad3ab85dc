"""Operational events pushed by the hub: failover, circuit, rate-limit saturation, error spikes."""

import json

from flaregate.hosts.local.runtime import LocalHubClient
from flaregate.hub.aggregator import MetricsHub
from flaregate.observability.analytics import Analytics
from tests.support.fakes import (
    FakeClock,
    InlineTasks,
    MemorySql,
    RecordingBroadcaster,
    RecordingScheduler,
)


def make():
    clock, bc = FakeClock(), RecordingBroadcaster(1)
    return MetricsHub(MemorySql(), clock, bc, RecordingScheduler()), clock, bc


def events_sent(bc, kind=None):
    found = [json.loads(text) for text in bc.sent if json.loads(text)["type"] == "event"]
    return [e for e in found if kind is None or e["event"] == kind]


def failover_event(**kw):
    return {"status": 200, "provider": "b", "model": "m", "key_id": "k", "latency_ms": 5.0,
            "upstream_attempts": [["a", False], ["b", True]], **kw}


async def test_failover_is_pushed_at_once_and_bursts_are_folded():
    hub, clock, bc = make()
    await hub.record([failover_event()])
    [event] = events_sent(bc, "failover")
    assert event["detail"] == {"from": ["a"], "to": "b", "model": "m"}
    assert event["severity"] == "warning" and event["count"] == 1 and event["protocol"] == 1
    await hub.record([failover_event(), failover_event()])
    assert len(events_sent(bc, "failover")) == 1  # held back during the cooldown ...
    clock.advance(31)
    await hub.record([failover_event()])
    assert events_sent(bc, "failover")[-1]["count"] == 3  # ... and counted in the next one
    assert hub.snapshot()["totals"]["failovers"] == 4
    recent = json.loads(hub.welcome())["recent_events"]
    assert [e["event"] for e in recent] == ["failover", "failover"]


async def test_an_error_spike_is_detected_from_server_side_failures_only():
    hub, clock, bc = make()
    client_errors = [{"status": 400, "model": "m", "latency_ms": 1.0}] * 10
    await hub.record(client_errors)
    assert events_sent(bc) == []
    failures = [{"status": 502, "error_code": "upstream_unreachable", "upstream_attempts": [["a", False]],
                 "model": "m", "latency_ms": 3.0}] * 5
    await hub.record(failures)
    [spike] = events_sent(bc, "error_spike")
    assert spike["severity"] == "critical"
    assert spike["detail"]["failures"] == 5 and spike["detail"]["requests"] == 15


async def test_rate_limit_saturation_names_the_key():
    hub, clock, bc = make()
    await hub.record([{"status": 200, "key_id": "key_1", "ratelimit_limit": 10, "ratelimit_remaining": 5}])
    assert events_sent(bc) == []
    await hub.record([{"status": 200, "key_id": "key_1", "ratelimit_limit": 10, "ratelimit_remaining": 1}])
    [event] = events_sent(bc, "rate_limit_saturation")
    assert event["detail"]["key_id"] == "key_1" and event["detail"]["used_ratio"] == 0.9


async def test_a_circuit_change_published_through_analytics_reaches_subscribers():
    hub, clock, bc = make()
    tasks = InlineTasks()
    analytics = Analytics(LocalHubClient(hub), tasks, batch_delay_ms=0)
    analytics.notify({"event": "circuit", "provider": "a", "state": "open", "previous": "closed"})
    analytics.notify({"event": "circuit", "provider": "a", "state": "sideways"})  # invalid: ignored
    await tasks.drain()
    [event] = events_sent(bc, "circuit")
    assert event["detail"] == {"provider": "a", "state": "open", "previous": "closed"}
    assert event["severity"] == "critical"
    assert hub.snapshot()["totals"]["requests"] == 0  # not a request
