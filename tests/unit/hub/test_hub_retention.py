"""Retention with a fake clock: minute rows roll into hours and days, old rows expire."""

import json

from flaregate.hub.aggregator import COMPACT_EVERY_SECONDS, MetricsHub
from flaregate.hub.store import DAY, HOUR, MINUTE
from tests.support.fakes import FakeClock, MemorySql, RecordingBroadcaster, RecordingScheduler

DAY0 = 20834 * DAY  # a UTC midnight


def make(start=DAY0 + 10, subscribers=0):
    clock = FakeClock(start)
    sched, bc = RecordingScheduler(), RecordingBroadcaster(subscribers)
    return MetricsHub(MemorySql(), clock, bc, sched), clock, sched, bc


def event(ts, **kw):
    return {"ts": ts, "status": 200, "provider": "p", "model": "m", "key_id": "k", "latency_ms": 40.0,
            "upstream_ms": 30.0, "cache": "MISS", **kw}


def rows(hub, resolution):
    return hub._sql.exec("SELECT bucket, SUM(requests) AS n FROM hub_rollup WHERE resolution = ?"
                         " GROUP BY bucket ORDER BY bucket", resolution)


def requests_in(hub, window):
    return hub.analytics(window)["windows"][window]["requests"]


async def test_minutes_roll_into_hours_and_days_and_expire_on_schedule():
    hub, clock, *_ = make()
    await hub.record([event(clock.now())] * 3)
    clock.advance(30 * MINUTE)
    await hub.record([event(clock.now())] * 2)
    assert [r["n"] for r in rows(hub, MINUTE)] == [3, 2]

    clock.t = DAY0 + HOUR + 5  # the first hour is complete
    assert hub.compact()["hours_rolled"] == 1
    assert rows(hub, HOUR) == [{"bucket": DAY0, "n": 5}]
    assert len(rows(hub, MINUTE)) == 2  # minute rows stay for an hour
    assert requests_in(hub, "1h") == 5 and requests_in(hub, "24h") == 5  # never counted twice

    clock.t = DAY0 + 2 * HOUR + 5
    hub.compact()
    assert rows(hub, MINUTE) == []  # older than an hour: gone
    assert requests_in(hub, "1h") == 0 and requests_in(hub, "24h") == 5
    await hub.record([event(clock.now())])

    clock.t = DAY0 + DAY + 10  # the first day is complete
    report = hub.compact()
    assert report["days_rolled"] == 1
    assert rows(hub, DAY) == [{"bucket": DAY0, "n": 6}]
    assert [r["n"] for r in rows(hub, HOUR)] == [5, 1]  # hourly rows stay for 24 hours
    assert requests_in(hub, "30d") == 6

    clock.t = DAY0 + 2 * DAY + 10
    hub.compact()
    assert rows(hub, HOUR) == []
    assert requests_in(hub, "30d") == 6

    clock.t = DAY0 + 31 * DAY + 10
    hub.compact()
    assert requests_in(hub, "30d") == 0
    assert requests_in(hub, "1y") == 6  # the archive: daily rows stay a year

    clock.t = DAY0 + 366 * DAY + 10
    hub.compact()
    assert rows(hub, DAY) == []  # daily rows last 365 days
    assert requests_in(hub, "1y") == 0
    assert hub.snapshot()["totals"]["requests"] == 6  # lifetime counters never expire


async def test_histograms_and_errors_roll_up_with_the_counters():
    hub, clock, *_ = make()
    await hub.record([event(clock.now(), latency_ms=3.0), event(clock.now(), latency_ms=700.0),
                      event(clock.now(), status=502, error_code="upstream_unreachable", latency_ms=9.0)])
    before = hub.analytics("1h")["windows"]["1h"]
    clock.t = DAY0 + DAY + 10
    hub.compact()
    after = hub.analytics("30d")["windows"]["30d"]
    assert after["latency_ms"]["total"]["count"] == before["latency_ms"]["total"]["count"] == 3
    assert after["latency_ms"]["total"]["p50"] == before["latency_ms"]["total"]["p50"]
    assert after["errors_by_class"] == before["errors_by_class"] == {"upstream_unreachable": 1}


async def test_a_late_event_is_counted_once_in_the_first_open_minute():
    hub, clock, *_ = make()
    await hub.record([event(clock.now())])
    clock.t = DAY0 + HOUR + 5
    hub.compact()
    await hub.record([event(DAY0 + 20)])  # its hour was already rolled up
    assert rows(hub, HOUR) == [{"bucket": DAY0, "n": 1}]
    assert rows(hub, MINUTE)[-1] == {"bucket": DAY0 + HOUR, "n": 1}
    assert requests_in(hub, "24h") == 2
    clock.t = DAY0 + 2 * HOUR + 5
    hub.compact()
    assert requests_in(hub, "24h") == 2


async def test_compaction_is_idempotent():
    hub, clock, *_ = make()
    await hub.record([event(clock.now())] * 4)
    clock.t = DAY0 + DAY + HOUR
    first = hub.compact()
    again = hub.compact()
    assert first["hours_rolled"] == 25 and again["hours_rolled"] == 0 and again["days_rolled"] == 0
    assert rows(hub, DAY) == [{"bucket": DAY0, "n": 4}]
    assert requests_in(hub, "30d") == 4


async def test_the_alarm_compacts_when_due_and_schedules_the_next_run():
    hub, clock, sched, bc = make(subscribers=1)
    await hub.record([event(clock.now())])
    compact_at = hub._state("compact_at")
    assert compact_at == clock.now() + COMPACT_EVERY_SECONDS
    await hub.alarm()  # the tick
    assert json.loads(bc.sent[-1])["type"] == "metrics"
    clock.advance(61)
    await hub.alarm()  # a last tick once the live window is empty ...
    assert json.loads(bc.sent[-1])["metrics"]["live"]["requests"] == 0
    assert sched.at[-1] == compact_at  # ... then the only pending wake-up is compaction
    clock.t = DAY0 + 2 * HOUR
    await hub.alarm()
    assert rows(hub, HOUR) == [{"bucket": DAY0, "n": 1}]
    assert rows(hub, MINUTE) == []
    assert hub._state("compact_at") == clock.now() + HOUR  # only hourly rows left


async def test_each_window_uses_its_own_resolution():
    hub, clock, *_ = make()
    await hub.record([event(clock.now())])
    clock.advance(3 * MINUTE)
    await hub.record([event(clock.now())] * 2)
    clock.t = DAY0 + HOUR + 5
    hub.compact()
    minute_series = hub.analytics("1h")["windows"]["1h"]["series"]
    assert [(p["t"], p["requests"]) for p in minute_series] == [(DAY0, 1), (DAY0 + 180, 2)]
    hour_series = hub.analytics("24h")["windows"]["24h"]["series"]
    assert [(p["t"], p["requests"]) for p in hour_series] == [(DAY0, 3)]


async def test_lifetime_counters_stay_exact_and_monotonic_across_compaction():
    from prometheus_client.parser import text_string_to_metric_families

    def requests_total():
        family = next(f for f in text_string_to_metric_families(hub.prometheus()) if f.name == "flaregate_requests")
        return sum(s.value for s in family.samples)

    hub, clock, *_ = make()
    await hub.record([event(clock.now())] * 3)
    assert requests_total() == 3 == hub.snapshot()["totals"]["requests"]
    for moment in (DAY0 + HOUR + 5, DAY0 + 2 * HOUR, DAY0 + 3 * DAY, DAY0 + 40 * DAY):
        clock.t = moment
        hub.compact()
        await hub.record([event(clock.now())])
        assert requests_total() == hub.snapshot()["totals"]["requests"]
    assert requests_total() == 7  # every window expired; the lifetime counter did not
