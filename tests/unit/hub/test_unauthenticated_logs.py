"""Records of requests refused before a key was known (401/403/429 without key_id) live in a
bucket of their own in the request log, capped at LOG_UNAUTHENTICATED_MAX_RECORDS and kept
LOG_UNAUTHENTICATED_RETENTION_SECONDS: a flood of bad tokens evicts only its own kind."""

from __future__ import annotations

from typing import Any

from flaregate.config import settings_from_vars
from flaregate.hub.aggregator import MetricsHub
from flaregate.hub.request_logs import RequestLogStore, unauthenticated
from tests.support.fakes import FakeClock, MemorySql, RecordingBroadcaster, RecordingScheduler

NOW = 1_800_000_000.0


def event(request_id: str, status: int, key_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"request_id": request_id, "ts": NOW, "status": status, "path": "/v1/chat/completions",
            **({"key_id": key_id} if key_id else {}), **extra}


def flood(store: RequestLogStore, count: int, start: int = 0) -> None:
    for first in range(start, start + count, 50):  # the hub's batches
        batch = [event(f"bad{i}", 429 if i % 3 else 401, error_code="invalid_api_key")
                 for i in range(first, min(first + 50, start + count))]
        store.write(batch, [], NOW)


def test_twenty_thousand_unauthenticated_records_keep_an_earlier_error_and_their_cap():
    store = RequestLogStore(MemorySql())
    store.write([event("real-error", 502, "key_a", error_class="upstream_error"),
                 event("real-warn", 429, "key_a", error_class="rate_limited"),
                 event("denied-model", 403, error_code="model_not_allowed")], [], NOW)
    flood(store, 20_000)
    assert store.get("real-error")["status"] == 502
    assert store.get("real-warn") is not None and store.get("denied-model") is not None
    assert store.count("unauthenticated") == 10_000  # at its cap, the oldest gone first
    assert store.get("bad9999") is None and store.get("bad10000") is not None and store.get("bad19999") is not None
    assert store.count() == 10_003
    page = store.query({"status": "5xx"})["data"]
    assert [r["request_id"] for r in page] == ["real-error"]


def test_the_bucket_has_its_own_short_retention_and_cap_settings():
    settings = settings_from_vars({"LOG_UNAUTHENTICATED_MAX_RECORDS": "7",
                                   "LOG_UNAUTHENTICATED_RETENTION_SECONDS": "120"})
    logs = settings.request_logs
    assert (logs.unauthenticated_max_records, logs.unauthenticated_seconds) == (7, 120.0)
    defaults = settings_from_vars({}).request_logs
    assert (defaults.unauthenticated_max_records, defaults.unauthenticated_seconds) == (10_000, 3600.0)
    store = RequestLogStore(MemorySql(), logs.retention(), unauthenticated_max_records=logs.unauthenticated_max_records)
    store.write([event("kept-warn", 400, "key_a")], [], NOW)
    flood(store, 30)
    assert store.count("unauthenticated") == 7
    assert store.expire(NOW + 121) == 7  # 120 s for the bucket...
    assert store.get("kept-warn") is not None  # ...7 days for a warning
    assert store.count() == 1


def test_which_records_are_unauthenticated():
    assert unauthenticated(event("a", 401))
    assert unauthenticated(event("a", 429, error_code="too_many_auth_failures"))
    assert unauthenticated(event("a", 403))
    assert not unauthenticated(event("a", 429, "key_a"))  # a key's rate limit
    assert not unauthenticated(event("a", 403, error_code="route_not_allowed"))  # a found key's refusal
    assert not unauthenticated(event("a", 400))
    assert not unauthenticated(event("a", 200))


def test_a_store_made_before_the_bucket_gets_its_column():
    sql = MemorySql()
    sql.exec("CREATE TABLE log_request (seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL,"
             " ts REAL NOT NULL, level TEXT NOT NULL, expires REAL NOT NULL, trace_id TEXT, key_id TEXT,"
             " model TEXT, provider TEXT, status INTEGER NOT NULL, error_class TEXT, cache TEXT, stream INTEGER,"
             " attempts INTEGER, failovers INTEGER, tokens_in INTEGER, tokens_out INTEGER, cost_usd REAL,"
             " latency_ms REAL, message TEXT, record TEXT NOT NULL)")
    sql.exec("INSERT INTO log_request (request_id, ts, level, expires, status, record)"
             " VALUES ('old', ?, 'warn', ?, 401, '{\"request_id\": \"old\"}')", NOW, NOW + 86400)
    store = RequestLogStore(sql, unauthenticated_max_records=3)
    flood(store, 10)
    assert store.get("old") is not None  # an old row is in no bucket: left as it was
    assert store.count("unauthenticated") == 3
    RequestLogStore(sql)  # again: nothing to add


async def test_the_hub_passes_its_cap_to_the_store():
    clock = FakeClock(NOW)
    hub = MetricsHub(MemorySql(), clock, RecordingBroadcaster(), RecordingScheduler(),
                     log_unauthenticated_max_records=5)
    await hub.record([event("real", 500, "key_a")])
    for i in range(4):
        await hub.record([event(f"bad{i}-{j}", 401) for j in range(10)])
    assert hub.logs.count("unauthenticated") == 5
    assert hub.logs.get("real") is not None
