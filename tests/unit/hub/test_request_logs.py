"""The request-log store: retention by level on a fake clock, filters, cursor pages."""

import pytest

from flaregate.hub.aggregator import MetricsHub
from flaregate.hub.request_logs import MAX_PAGE, RequestLogStore, request_level
from tests.support.fakes import FakeClock, MemorySql, RecordingBroadcaster, RecordingScheduler

DAY, HOUR = 86400, 3600
T0 = 1_800_000_000.0


def event(rid, ts=T0, **kw):
    return {"ts": ts, "request_id": rid, "trace_id": "ab" * 16, "status": 200, "provider": "p", "model": "m",
            "key_id": "k", "latency_ms": 40.0, "cache": "MISS", **kw}


def make_hub(start=T0):
    clock = FakeClock(start)
    return MetricsHub(MemorySql(), clock, RecordingBroadcaster(0), RecordingScheduler()), clock


def ids(page):
    return [r["request_id"] for r in page["data"]]


def test_levels_follow_status_and_error_class():
    assert request_level(event("a")) == "info"
    assert request_level(event("a", status=429, error_class="rate_limited")) == "warn"
    assert request_level(event("a", status=502, error_class="upstream_5xx")) == "error"
    assert request_level(event("a", failovers=1)) == "warn"
    assert request_level(event("a", level="debug")) == "debug"


async def test_warn_record_exists_at_6d23h_and_is_gone_at_7d1h():
    hub, clock = make_hub()
    await hub.record([event("warn1", status=404, error_class="not_found"), event("info1"),
                      event("err1", status=502, error_class="upstream_5xx")])
    assert hub.logs.get("warn1")["level"] == "warn"

    clock.t = T0 + 6 * DAY + 23 * HOUR
    hub.compact()
    assert hub.logs.get("warn1") is not None
    assert hub.logs.get("info1") is None  # info: 24 hours
    clock.t = T0 + 7 * DAY + HOUR
    report = hub.compact()
    assert hub.logs.get("warn1") is None
    assert report["logs_expired"] == 1
    assert hub.logs.get("err1") is not None  # error: 30 days
    clock.t = T0 + 30 * DAY + 1
    hub.compact()
    assert hub.logs.get("err1") is None


async def test_debug_expires_after_an_hour_and_retention_is_configurable():
    clock = FakeClock(T0)
    hub = MetricsHub(MemorySql(), clock, RecordingBroadcaster(0), RecordingScheduler(),
                     log_retention={"warn": 60.0})
    await hub.record([event("d", level="debug"), event("w", status=400, error_class="bad_request")])
    clock.t = T0 + 61
    hub.compact()
    assert hub.logs.get("w") is None and hub.logs.get("d") is not None
    clock.t = T0 + HOUR + 1
    hub.compact()
    assert hub.logs.get("d") is None


def test_expiry_is_bounded_per_run():
    store = RequestLogStore(MemorySql())
    store.write([event(f"r{i}", level="debug") for i in range(25)], [], T0)
    assert store.expire(T0 + 2 * HOUR, batch=10) == 10
    assert store.count() == 15
    assert store.expire(T0 + 2 * HOUR, batch=10) == 10
    assert store.expire(T0 + 2 * HOUR, batch=10) == 5
    assert store.count() == 0


@pytest.fixture
def seeded():
    store = RequestLogStore(MemorySql())
    store.write([
        event("r1", ts=T0 + 1, provider="openai", model="gpt", status=200, cache="HIT"),
        event("r2", ts=T0 + 2, provider="openai", model="gpt", status=502, error_class="upstream_5xx",
              error_message="Upstream provider 'openai' returned 502"),
        event("r3", ts=T0 + 3, provider="anthropic", model="claude", status=502, error_class="upstream_5xx"),
        event("r4", ts=T0 + 4, provider="anthropic", model="claude", status=429, error_class="rate_limited",
              key_id="other", tags={"team": "a"}),
        event("r5", ts=T0 + 5, provider="openai", model="gpt", status=200, cache_tier="hot", shed=False),
    ], [{"type": "failover", "request_id": "r2", "from": "openai", "to": "anthropic", "ts": T0 + 2}], T0 + 10)
    return store


@pytest.mark.parametrize("params, expected", [
    ({}, ["r5", "r4", "r3", "r2", "r1"]),
    ({"status": "502"}, ["r3", "r2"]),
    ({"status": "4xx"}, ["r4"]),
    ({"status": "2xx", "provider": "openai"}, ["r5", "r1"]),
    ({"model": "claude"}, ["r4", "r3"]),
    ({"key_id": "other"}, ["r4"]),
    ({"cache": "HIT"}, ["r1"]),
    ({"cache": "hot"}, ["r5"]),
    ({"error_class": "rate_limited"}, ["r4"]),
    ({"request_id": "r3"}, ["r3"]),
    ({"level": "error"}, ["r3", "r2"]),
    ({"level": "warn"}, ["r4"]),
    ({"q": "returned 502"}, ["r2"]),
    ({"q": "100%"}, []),
    ({"since": str(T0 + 2), "until": str(T0 + 4)}, ["r3", "r2"]),
])
def test_filters(seeded, params, expected):
    assert ids(seeded.query(params)) == expected


def test_record_keeps_contract_keys_and_events(seeded):
    record = seeded.get("r4")
    assert record["tags"] == {"team": "a"} and record["level"] == "warn"
    assert seeded.get("r5")["cache_tier"] == "hot"
    assert [e["type"] for e in seeded.get("r2")["events"]] == ["failover"]
    assert seeded.get("r2")["events"][0]["level"] == "warn"
    assert seeded.get("nope") is None


def test_cursor_pages_cover_everything_once(seeded):
    seen, cursor = [], None
    while True:
        page = seeded.query({"limit": "2", **({"cursor": cursor} if cursor else {})})
        seen += ids(page)
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["r5", "r4", "r3", "r2", "r1"]


def test_hard_page_limit():
    store = RequestLogStore(MemorySql())
    store.write([event(f"r{i}", ts=T0 + i) for i in range(MAX_PAGE + 10)], [], T0 + 1000)
    page = store.query({"limit": "100000"})
    assert len(page["data"]) == MAX_PAGE and page["has_more"]


@pytest.mark.parametrize("params, param", [
    ({"status": "abc"}, "status"), ({"since": "yesterday"}, "since"), ({"limit": "0"}, "limit"),
    ({"limit": "x"}, "limit"), ({"cursor": "!!!"}, "cursor"), ({"level": "fatal"}, "level"),
])
def test_bad_queries_answer_an_error_not_an_exception(seeded, params, param):
    assert seeded.answer(params)["error"]["param"] == param


def test_bad_events_are_skipped_or_nulled():
    store = RequestLogStore(MemorySql())
    written = store.write([{"ts": "x"}, {"request_id": 5}, {"request_id": "ok", "status": "bad", "ts": None,
                                                            "tokens_in": 2**60, "latency_ms": True}], [], T0)
    assert written == 1
    assert store.get("ok")["request_id"] == "ok"
