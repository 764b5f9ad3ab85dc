import json

import pytest

from flaregate.hub.aggregator import MetricsHub
from tests.support.fakes import FakeClock, MemorySql, RecordingBroadcaster, RecordingScheduler


def make(subscribers=1):
    clock, sched, bc = FakeClock(), RecordingScheduler(), RecordingBroadcaster(subscribers)
    return MetricsHub(MemorySql(), clock, bc, sched, tick_seconds=1.0), clock, sched, bc


def event(**kw):
    base = {"status": 200, "provider": "p", "model": "m", "latency_ms": 10.0, "cache": "MISS"}
    return {**base, **kw}


async def test_record_schedules_one_tick_and_alarm_broadcasts_totals():
    hub, clock, sched, bc = make()
    assert await hub.record([event(), event(status=500), event(cache="HIT", latency_ms=2.0)]) == 3
    await hub.record([event()])
    assert sched.at == [clock.now()]  # one pending tick, not one per record
    await hub.alarm()
    message = json.loads(bc.sent[-1])
    assert message["type"] == "metrics"
    totals = message["metrics"]["totals"]
    assert totals["requests"] == 4 and totals["errors"] == 1
    assert totals["cache_hits"] == 1 and totals["cache_misses"] == 3
    assert message["metrics"]["latency_ms"]["p50"] == 10.0


async def test_ticks_are_at_most_one_per_interval():
    hub, clock, sched, bc = make()
    await hub.record([event()])
    await hub.alarm()
    clock.advance(0.25)
    await hub.record([event()])
    assert sched.at[-1] == pytest.approx(clock.now() + 0.75)
    await hub.alarm()  # nothing new after this one: the next alarm stays silent
    await hub.alarm()
    assert len(bc.sent) == 2


async def test_bad_events_are_skipped_not_fatal():
    hub, *_ = make()
    accepted = await hub.record([{"status": "x", "latency_ms": float("nan")}, "junk", None, event()])
    assert accepted == 2  # the malformed dict counts with defaults; non-dicts are dropped
    assert await hub.record("not a list") == 0
    assert hub.snapshot()["totals"]["requests"] == 2


async def test_state_survives_a_new_instance_over_the_same_sql():
    hub, clock, sched, bc = make()
    await hub.record([event(), event()])
    again = MetricsHub(hub._sql, clock, bc, sched)
    assert again.snapshot()["totals"]["requests"] == 2


def test_reply_to_client_frames():
    hub, *_ = make()
    assert json.loads(hub.reply('{"type": "ping"}'))["type"] == "pong"
    assert json.loads(hub.reply('{"type": "snapshot"}'))["type"] == "snapshot"
    for garbage in ("not json", "[1,2]", '{"type": "nope"}', b"\x00\x01", "x" * 10_000):
        assert json.loads(hub.reply(garbage))["type"] == "error"


async def test_operational_events_go_to_subscribers_and_are_not_requests():
    hub, _, sched, bc = make()
    circuit = {"type": "circuit", "target": "a/m", "from": "closed", "to": "open", "reason": "5 failures"}
    assert await hub.record([circuit, event(), {"type": "failover", "from": "a/m", "to": "b/m"}]) == 1
    sent = [json.loads(m) for m in bc.sent]
    relayed = [m for m in sent if m["type"] != "event"]  # raw, as they happened
    assert [m["type"] for m in relayed] == ["circuit", "failover"]
    assert relayed[0]["to"] == "open" and relayed[0]["protocol"] == 1
    folded = [m for m in sent if m["type"] == "event"]  # the dashboard's view of the circuit change
    assert [(m["event"], m["detail"]["provider"], m["detail"]["state"]) for m in folded] == [("circuit", "a", "open")]
    assert hub.snapshot()["totals"]["requests"] == 1
    quiet, _, _, quiet_bc = make(subscribers=0)
    assert await quiet.record([circuit]) == 0 and quiet_bc.sent == []


async def test_events_that_are_not_requests_are_counted_apart():
    hub, clock, sched, bc = make()
    assert await hub.record([{"type": "ratelimit_degraded", "mode": "fail_open"}, event()]) == 1
    await hub.record([{"type": "ratelimit_degraded"}])
    assert hub.snapshot()["totals"]["requests"] == 1
    counted = hub._sql.exec("SELECT value FROM hub_state WHERE name = 'event:ratelimit_degraded'")
    assert counted == [{"value": 2}]
