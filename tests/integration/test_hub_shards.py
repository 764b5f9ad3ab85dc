"""HUB_SHARDS=3 through a real server: on the Worker the isolate spreads its batches over
three MetricsHub objects and every read merges them; the local host keeps one hub (the
same render code). On both, /v1/analytics and /metrics equal what one hub computes from
the same events (the request-log records, which read back as the events were written),
/v1/logs pages cover every record once, and /ws's snapshot counts every request."""

import asyncio
import base64
import json
import secrets
import time

import httpx
import pytest
import websockets

from flaregate.hub.aggregator import MetricsHub
from flaregate.hub.views import parse_prometheus
from tests.support.fakes import FakeClock, MemorySql, RecordingBroadcaster, RecordingScheduler

from .conftest import ADMIN_KEY, GATEWAY_KEY, TARGET, run_gateway, upstream_env

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
API = {"authorization": f"Bearer {GATEWAY_KEY}"}
SHARDS = 3
OK, FAILED = 60, 6


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, HUB_SHARDS=str(SHARDS), ANALYTICS_BATCH_SIZE="5",
                       RATE_LIMIT_CAPACITY="100000", RATE_LIMIT_REFILL_PER_SECOND="100000")
    with run_gateway(tmp_path_factory.mktemp("hub-shards"), env) as gateway:
        yield gateway


def get(server, path, **params):
    response = httpx.get(server.base_url + path, params=params, headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    return response


def every_record(server, limit: int = 7):
    """Every record, paged ``limit`` at a time, and the shards the pages' cursors name."""
    records, shards, cursor = [], set(), None
    while True:
        page = get(server, "/v1/logs", limit=str(limit), **({"cursor": cursor} if cursor else {})).json()
        records += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            return records, shards
        if cursor.startswith("s"):  # a merged cursor names the shard of the row it continues after
            shards.add(int(base64.urlsafe_b64decode(cursor[1:] + "=" * (-len(cursor[1:]) % 4)).decode().split(":")[1]))


@pytest.fixture(scope="module")
def sent(server):
    run = secrets.token_hex(3)
    ids = []
    with httpx.Client(base_url=server.base_url, timeout=30, headers=API) as client:
        for i in range(OK + FAILED):
            model = "gpt-dead" if i % 11 == 0 else ("gpt-test" if i % 2 else "mock-1")
            response = client.post("/v1/chat/completions",
                                   json={"model": model, "messages": [{"role": "user", "content": f"{run} {i}"}]})
            assert response.status_code == (502 if model == "gpt-dead" else 200)
            ids.append(response.headers["x-request-id"])
    deadline = time.monotonic() + 30
    while len(every_record(server)[0]) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.3)
    return ids


def one_hub_of(records):
    """One hub in this process fed the same events (the records, as they read back)."""
    now = time.time()
    hub = MetricsHub(MemorySql(), FakeClock(now), RecordingBroadcaster(0), RecordingScheduler())
    events = [{k: v for k, v in r.items() if k not in ("level", "events")} for r in records]
    asyncio.run(hub.record(sorted(events, key=lambda e: e["ts"])))
    return hub


COUNTS = ("requests", "errors", "failures", "cache_hits", "cache_misses", "streams", "attempts",
          "attempt_failures", "tokens_in", "tokens_out")


def test_merged_analytics_and_metrics_equal_one_hubs_on_the_same_events(server, sent):
    # Pages of 2: a cursor names the shard of its page's last row, so with pages of 7 (9
    # cursors) one shard went unnamed about one run in thirteen; with 33 cursors, never.
    records, shards = every_record(server, limit=2)
    assert sorted(r["request_id"] for r in records) == sorted(sent)  # each record once
    if TARGET == "edge":
        assert shards == set(range(SHARDS))  # the batches were spread over every shard
    hub = one_hub_of(records)
    merged = get(server, "/v1/analytics", window="1h").json()
    single = hub.analytics("1h")
    if TARGET == "edge":
        assert merged["shards"] == {"answered": SHARDS, "of": SHARDS}
    m, s = merged["windows"]["1h"], single["windows"]["1h"]
    assert m["requests"] == len(sent)
    assert {c: m[c] for c in COUNTS} == {c: s[c] for c in COUNTS}
    assert m["cost_usd"] == pytest.approx(s["cost_usd"], rel=1e-9, abs=1e-12)
    assert m["errors_by_class"] == s["errors_by_class"]
    for dimension in ("by_provider", "by_model", "by_key"):
        assert {name: {c: g[c] for c in COUNTS} for name, g in m[dimension].items()} == \
               {name: {c: g[c] for c in COUNTS} for name, g in s[dimension].items()}, dimension
    # Percentiles come from the merged histograms: the buckets one hub holds, so equal.
    assert m["latency_ms"]["total"]["p95"] == s["latency_ms"]["total"]["p95"]
    assert m["by_model"]["mock-1"]["latency_ms"]["upstream"]["p50"] == \
        s["by_model"]["mock-1"]["latency_ms"]["upstream"]["p50"]

    text = get(server, "/metrics").text
    ours, theirs = parse_prometheus(text), parse_prometheus(hub.prometheus())
    for family in ("flaregate_requests_total", "flaregate_errors_total", "flaregate_tokens_total",
                   "flaregate_request_duration_seconds_bucket", "flaregate_upstream_attempts_total"):
        mine = {k: v for k, v in ours.items() if k.startswith(family + "{")}
        assert mine and mine == {k: v for k, v in theirs.items() if k.startswith(family + "{")}, family
    if TARGET == "edge":
        assert ours["flaregate_hub_shards"] == SHARDS and ours["flaregate_hub_shards_answered"] == SHARDS
    health = get(server, "/health").json()
    assert health["request_logs"]["records"] == len(sent)


def test_the_live_snapshot_on_ws_counts_every_shards_requests(server, sent):
    async def snapshot():
        async with websockets.connect(server.ws_url, subprotocols=["flaregate.v1", f"bearer.{ADMIN_KEY}"]) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert hello["type"] == "hello"
            return json.loads(await asyncio.wait_for(ws.recv(), 30))

    message = asyncio.run(snapshot())
    assert message["type"] == "snapshot"
    assert message["metrics"]["totals"]["requests"] == len(sent)
    if TARGET == "edge":
        assert message["metrics"]["shards"] == {"answered": SHARDS, "of": SHARDS}
