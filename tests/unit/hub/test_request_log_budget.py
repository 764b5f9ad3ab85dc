"""The compact request-log record reads back as the event it was written from; the store
stops at its byte budget, evicting oldest first inside the class over its share; info
sampling keeps every error and warning and weighs what it keeps so counts stay right."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flaregate.hub import request_log_format as fmt
from flaregate.hub.request_logs import RequestLogStore
from tests.support.fakes import MemorySql

T0 = 1_800_000_000.0


def chat_event(i: int, ts: float = T0, **extra: Any) -> dict[str, Any]:
    """The shape the pipeline writes for a chat completion (from a real local run)."""
    return {"ts": ts, "request_id": f"req_{i:024x}", "trace_id": f"{i:032x}", "span_id": f"{i:016x}",
            "parent_span_id": None, "path": "/v1/chat/completions", "status": 200, "model": "mock-1",
            "provider": "mock", "cache": "MISS", "stream": False, "key_id": "key_0e6e5cfde8662c3e",
            "ratelimit_limit": 100000000.0, "ratelimit_remaining": 99998556.0, "attempts": 1, "failovers": 0,
            "upstream_status": 200, "upstream_model": "mock-1", "kv_write_avoided": True, "tokens_in": 4,
            "tokens_out": 8, "latency_ms": 1.121,
            "phases": {"auth": 0.008, "parse": 0.017, "route": 0.005, "ratelimit": 0.025, "cache": 0.036,
                       "upstream_ttfb": 0.327, "upstream": 0.994, "format": 0.013},
            "upstream_ms": 0.994, "error_class": None, "upstream_attempts": [["mock", True]], "overhead_ms": 0.127,
            **extra}


ODD_EVENTS = [
    chat_event(1),
    chat_event(2, status=502, error_class="upstream_5xx", error="Upstream provider 'mock' returned 502",
               upstream_attempts=[["a", False], ["b", False]], failovers=1, cost_usd=0.00012),
    # Values a column cannot hold exactly: they travel in the extra JSON.
    chat_event(3, latency_ms=5, tokens_in="12", stream=1, phases={"x": 1}, upstream_attempts=[["a"]],
               trace_id="NOT-hex", span_id="abc", status=200.0, ratelimit_limit=7, overhead_ms=1.00000001),
    chat_event(4, tags={"team": "a", "feature": "x"}, guardrails=[{"name": "pii", "action": "mask"}],
               route="fast", route_branch=2, shed=False, cache_tier="hot", bytes_saved=10, unknown_field=[1, {"a": None}],
               nothing=None, parent_span_id="00f067aa0ba902b7", ttft_ms=12.5, stream_outcome="completed"),
    {"ts": T0, "request_id": "bare"},
    {"ts": T0, "request_id": "nulls", **{name: None for name in (*fmt.COLUMNS, *fmt.RARE)}},
    chat_event(5, phases={}, upstream_attempts=[], key_id="k" * 300, model="\u00e9\u00e8 \u4e2d\u6587"),
]


@pytest.mark.parametrize("event", ODD_EVENTS, ids=lambda e: e["request_id"])
def test_a_record_reads_back_as_the_event_it_was_written_from(event):
    store = RequestLogStore(MemorySql())
    assert store.write([event], [], T0) == 1
    record = store.get(event["request_id"])
    assert record is not None
    record.pop("events"), record.pop("level")
    assert record == event
    assert {k: type(v) for k, v in record.items()} == {k: type(v) for k, v in event.items()}
    page = store.query({"request_id": event["request_id"]})["data"]
    assert page[0]["request_id"] == event["request_id"]


def test_filters_find_packed_and_labelled_values():
    store = RequestLogStore(MemorySql())
    store.write([chat_event(1), chat_event(2, trace_id="NOT-hex", model="other", key_id="k2")], [], T0)
    assert [r["request_id"] for r in store.query({"trace_id": f"{1:032x}"})["data"]] == [f"req_{1:024x}"]
    assert [r["request_id"] for r in store.query({"trace_id": "NOT-hex"})["data"]] == [f"req_{2:024x}"]
    assert [r["request_id"] for r in store.query({"model": "other", "key_id": "k2"})["data"]] == [f"req_{2:024x}"]
    assert store.query({"model": "never-seen"})["data"] == []


def test_the_store_stops_at_its_byte_budget_and_evicts_the_oldest_first():
    budget = 200_000
    store = RequestLogStore(MemorySql(), max_bytes=budget)
    error = chat_event(0, status=502, error_class="upstream_5xx")
    store.write([error], [], T0)
    for batch in range(40):  # 2 000 info records, far past the budget
        store.write([chat_event(1 + batch * 50 + i, ts=T0 + batch + i / 100) for i in range(50)], [], T0 + batch)
        assert store.usage()["bytes"] <= budget
    usage = store.usage()
    info = usage["classes"]["info"]
    assert info["evicted"] > 0 and usage["evicted"] == info["evicted"]  # only info gave way
    assert store.count() == usage["records"] == info["records"] + 1
    assert store.get(error["request_id"]) is not None  # the error class stayed within its share
    kept = [r["request_id"] for r in store.query({"level": "info", "limit": "200"})["data"]]
    newest = [f"req_{i:024x}" for i in range(2000, 2000 - len(kept), -1)]
    assert kept == newest  # what is left is the newest, in order: the oldest went first
    assert store.get(f"req_{1:024x}") is None
    # The estimate is what the budget counts: the real pages stay in its range.
    assert 0.5 < usage["bytes"] / (info["records"] + 1) / 266 < 2


def test_a_flood_of_one_class_takes_another_only_beyond_its_share():
    store = RequestLogStore(MemorySql(), max_bytes=100_000)
    store.write([chat_event(i, status=502, error_class="upstream_5xx") for i in range(20)], [], T0)
    store.write([chat_event(100 + i, ts=T0 + 1) for i in range(2000)], [], T0 + 1)
    assert store.query({"level": "error", "limit": "200"})["data"].__len__() == 20
    # ...but errors past their share are evicted, their own oldest first.
    store.write([chat_event(5000 + i, ts=T0 + 2 + i, status=502, error_class="upstream_5xx")
                 for i in range(1000)], [], T0 + 2)
    errors = store.query({"level": "error", "limit": "200"})["data"]
    assert errors[0]["request_id"] == f"req_{5999:024x}"
    assert store.get(f"req_{0:024x}") is None
    assert store.usage()["bytes"] <= 100_000


def test_sampling_keeps_every_error_and_warning_and_weighs_the_kept_info_records():
    store = RequestLogStore(MemorySql(), sample_info_per_second=10)
    events = []
    for i in range(1000):
        if i % 50 == 0:
            events.append(chat_event(i, status=502, error_class="upstream_5xx"))
        elif i % 50 == 1:
            events.append(chat_event(i, status=429, error_class="rate_limited"))
        else:
            events.append(chat_event(i))
    store.write(events, [], T0)  # one second: 960 info, 20 errors, 20 warnings
    errors = store.query({"level": "error", "limit": "200"})["data"]
    warnings = store.query({"level": "warn", "limit": "200"})["data"]
    assert len(errors) == 20 and len(warnings) == 20
    assert all("sample_weight" not in r for r in errors + warnings)
    info = []
    cursor = None
    while True:
        page = store.query({"level": "info", "limit": "200", **({"cursor": cursor} if cursor else {})})
        info += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(info) < 200  # sampled
    weighed = sum(r.get("sample_weight", 1) for r in info)
    assert 960 - 96 < weighed <= 960  # the weights stand for the records left out (all but the last owed)
    usage = store.usage()
    assert usage["sampled_out"] == 960 - len(info)
    store.write([chat_event(5000 + i) for i in range(5)], [], T0 + 1)  # a new second: kept again
    newest = store.query({"limit": "5"})["data"]
    assert [r.get("sample_weight", 1) for r in newest[:4]] == [1, 1, 1, 1]
    assert weighed + sum(r.get("sample_weight", 1) for r in newest) == 965  # what was owed went with it


def test_usage_is_counted_per_class_and_expiry_is_counted():
    store = RequestLogStore(MemorySql(), {"info": 60.0})
    store.write([chat_event(i) for i in range(10)], [], T0)
    assert store.usage()["classes"]["info"]["records"] == 10
    assert store.expire(T0 + 61) == 10
    usage = store.usage()["classes"]["info"]
    assert (usage["records"], usage["bytes"], usage["expired"]) == (0, 0, 10)


def test_random_events_read_back_as_written_or_are_skipped():
    """Fuzz: any JSON-shaped values in any field; the store never raises, and a record it
    writes reads back equal to its event."""
    import random

    rng = random.Random(31)
    names = [*fmt.COLUMNS, *fmt.RARE, "free", "tags"]
    values: list[Any] = [None, True, False, 0, -1, 2**60, 1.5, float("1e308"), "", "x" * 300, "ab" * 16, "!x",
                         "1:2,3", [], [["p", True]], [["p"]], {}, {"a": 1.0}, {"a,b": 0.5}, {"n": None}, "\u0000",
                         "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace")]
    store = RequestLogStore(MemorySql())
    for i in range(400):
        event = {"ts": T0 + i, "request_id": f"fuzz{i}"}
        for name in rng.sample(names, rng.randrange(0, 12)):
            event[name] = rng.choice(values)
        store.write([event], [], T0 + i)
        record = store.get(f"fuzz{i}")
        assert record is not None
        record.pop("events"), record.pop("level")
        assert json.dumps(record, sort_keys=True, default=str) == json.dumps(event, sort_keys=True, default=str)
