"""The Durable Object classes over fake DO storage: same behaviour as the core objects."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest

from durable_objects.metrics_hub import MetricsHub
from durable_objects.rate_limiter import RateLimiter
from flaregate.hosts.edge import objects as edge_objects
from flaregate.hosts.edge.ports import AlarmScheduler
from flaregate.ratelimits.limiter import RateLimiter as CoreRateLimiter
from tests.support.fakes import FakeClock, MemorySql

from .conftest import DirectRpc, FakeCtx, FakeRequest, FakeStorage, FakeWebSocket

ENV = types.SimpleNamespace(METRICS_TICK_SECONDS="1")
POLICY = {"algorithm": "token_bucket", "capacity": 3, "refill_per_second": 0.5}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(edge_objects, "SystemClock", lambda: clock)
    return clock


def test_rate_limiter_do_decides_like_the_core_object(monkeypatch: pytest.MonkeyPatch):
    do_clock, core_clock = FakeClock(), FakeClock()
    monkeypatch.setattr(edge_objects, "SystemClock", lambda: do_clock)
    limiter_do = DirectRpc(RateLimiter(FakeCtx(), ENV))
    core = CoreRateLimiter(MemorySql(), core_clock)
    steps: list[tuple[str, float, float]] = [
        ("key:a", 1, 0), ("key:a", 1, 0), ("key:b", 1, 0), ("key:a", 1, 0), ("key:a", 1, 0),
        ("key:a", 1, 0.9), ("key:a", 1, 1.2), ("key:b", 2, 0), ("key:b", 2, 0), ("key:a", 1, 30),
    ]
    allowed = []
    for key, cost, wait in steps:
        do_clock.advance(wait)
        core_clock.advance(wait)
        got = limiter_do.check(key, POLICY, cost)
        assert got == core.check(key, POLICY, cost), (key, cost, wait)
        allowed.append(got["allowed"])
    assert True in allowed and False in allowed  # the sequence exercises both outcomes
    # The state is in DO SQL: a new instance over the same storage continues from it.
    again = DirectRpc(RateLimiter(limiter_do.ctx, ENV))
    assert again.check("key:a", POLICY) == core.check("key:a", POLICY)


async def fire_alarm(hub: MetricsHub, storage: FakeStorage) -> None:
    storage.alarm = None  # the runtime clears an alarm as it fires
    await hub.alarm()


async def subscribe(hub: MetricsHub) -> FakeWebSocket:
    response = await hub.fetch(FakeRequest("GET", "https://hub/ws", {"upgrade": "websocket"}))
    assert response.status == 101
    return hub.ctx.accepted[-1][0]


def event(**extra: Any) -> dict[str, Any]:
    return {"status": 200, "provider": "mock", "model": "mock-1", "latency_ms": 12.5,
            "cache": "MISS", **extra}


async def test_hub_records_ticks_on_the_alarm_and_broadcasts(clock: FakeClock):
    ctx = FakeCtx()
    hub = DirectRpc(MetricsHub(ctx, ENV))
    first, second = await subscribe(hub), await subscribe(hub)
    assert [[m["type"] for m in ws.messages()] for ws in (first, second)] == [["hello", "snapshot"]] * 2
    assert [tags for _, tags in ctx.accepted] == [["metrics"], ["metrics"]]

    assert await hub.publish([event(), event(status=500)]) == 2
    assert ctx.storage.alarm == int(clock.now() * 1000)
    await fire_alarm(hub, ctx.storage)
    for ws in (first, second):
        tick = ws.messages()[-1]
        assert tick["type"] == "metrics"
        assert tick["metrics"]["totals"]["requests"] == 2
        assert tick["metrics"]["totals"]["errors"] == 1
        assert tick["metrics"]["subscribers"] == 2

    # The next tick waits a full tick period after the last broadcast.
    await hub.publish([event()])
    assert ctx.storage.alarm == int((clock.now() + 1) * 1000)
    clock.advance(1)
    await fire_alarm(hub, ctx.storage)
    assert first.messages()[-1]["metrics"]["totals"]["requests"] == 3
    # No change since: an alarm broadcasts nothing.
    sent = len(first.sent)
    await fire_alarm(hub, ctx.storage)
    assert len(first.sent) == sent


async def test_every_rpc_method_of_the_objects_takes_and_answers_one_json_string(clock: FakeClock):
    """The wire contract of hosts/edge/rpc.py: a method without it would get the SDK's
    converted JS objects, and the Worker's rpc.call would fail to decode its answer."""
    from durable_objects.security_store import SecurityStore

    rpc_methods = {"check", "acquire", "reconcile", "usage", "reset", "publish", "snapshot", "health",
                   "analytics", "prometheus", "logs", "run_op"}
    for cls in (RateLimiter, MetricsHub, SecurityStore):
        public = {name for name, value in vars(cls).items() if callable(value) and not name.startswith("_")}
        for name in public & rpc_methods:
            assert getattr(getattr(cls, name), "json_rpc", False), f"{cls.__name__}.{name}"
    hub = MetricsHub(FakeCtx(), ENV)
    answer = await hub.publish(json.dumps([[event(), event(cache="HIT")]]))
    assert answer == "2"
    assert json.loads(await hub.snapshot("[]"))["totals"]["cache_hits"] == 1


async def test_hub_wakes_from_hibernation_with_its_totals_and_sockets(clock: FakeClock):
    ctx = FakeCtx()
    hub = DirectRpc(MetricsHub(ctx, ENV))
    ws = await subscribe(hub)
    await hub.publish([event(), event()])
    await fire_alarm(hub, ctx.storage)
    before = await hub.snapshot()

    clock.advance(5)
    woken = DirectRpc(MetricsHub(ctx, ENV))  # the runtime constructs the class again over the same storage
    after = await woken.snapshot()
    assert after["totals"] == before["totals"]
    assert after["uptime_s"] == before["uptime_s"] + 5  # started_at survived
    assert after["subscribers"] == 1  # sockets live in the runtime, not in Python memory
    await woken.publish([event()])
    await fire_alarm(woken, ctx.storage)
    assert ws.messages()[-1]["metrics"]["totals"]["requests"] == 3


async def test_hub_answers_client_frames(clock: FakeClock):
    hub = DirectRpc(MetricsHub(FakeCtx(), ENV))
    ws = await subscribe(hub)
    await hub.webSocketMessage(ws, "definitely not json")
    assert ws.messages()[-1]["type"] == "error"
    await hub.webSocketMessage(ws, object())  # a binary frame (JS ArrayBuffer)
    assert ws.messages()[-1]["type"] == "error"
    await hub.webSocketMessage(ws, json.dumps({"type": "ping"}))
    assert ws.messages()[-1]["type"] == "pong"
    await hub.webSocketMessage(ws, json.dumps({"type": "snapshot"}))
    assert ws.messages()[-1]["type"] == "snapshot"


async def test_a_socket_that_cannot_be_written_is_dropped_others_still_receive(clock: FakeClock):
    ctx = FakeCtx()
    hub = DirectRpc(MetricsHub(ctx, ENV))
    broken, healthy = await subscribe(hub), await subscribe(hub)
    broken.fail_send = True
    await hub.publish([event()])
    await fire_alarm(hub, ctx.storage)
    assert healthy.messages()[-1]["type"] == "metrics"
    assert broken.closed is not None and broken.closed[0] == 1011
    assert ctx.getWebSockets("metrics") == [healthy]
    assert (await hub.snapshot())["subscribers"] == 1


async def test_close_and_error_handlers_never_raise(clock: FakeClock):
    hub = DirectRpc(MetricsHub(FakeCtx(), ENV))
    ws = await subscribe(hub)
    await hub.webSocketClose(ws, 1005, "", True)  # reserved code: close() raises, handler must not
    assert ws.closed is None
    await hub.webSocketClose(ws, 1000, "bye", True)
    assert ws.closed == (1000, "bye")
    await hub.webSocketError(ws, RuntimeError("boom"))  # already closed: still quiet
    other = await subscribe(hub)
    await hub.webSocketError(other, RuntimeError("boom"))
    assert other.closed == (1011, "error")


async def test_alarm_scheduler_keeps_the_earliest_alarm():
    storage = FakeStorage()
    scheduler = AlarmScheduler(storage)
    await scheduler.schedule(100.5)
    await scheduler.schedule(200.0)  # later: the pending alarm stays
    assert storage.alarm == 100_500
    await scheduler.schedule(50.0)  # earlier: replaces it
    assert storage.alarm_sets == [100_500, 50_000]


# -- the observability hub on the Durable Object ----------------------------------------------
async def test_accept_sends_the_whole_greeting_and_selects_only_our_subprotocol(clock: FakeClock):
    hub = DirectRpc(MetricsHub(FakeCtx(), ENV))
    ws = await subscribe(hub)
    assert [m["type"] for m in ws.messages()] == ["hello", "snapshot"]
    chosen = await hub.fetch(FakeRequest("GET", "https://hub/ws", {"x-flaregate-subprotocol": "flaregate.v1"}))
    assert chosen.headers["sec-websocket-protocol"] == "flaregate.v1"
    odd = await hub.fetch(FakeRequest("GET", "https://hub/ws", {"x-flaregate-subprotocol": "bearer.secret"}))
    assert "sec-websocket-protocol" not in odd.headers


async def test_a_frame_over_the_limit_closes_with_1009_others_get_answers(clock: FakeClock):
    hub = DirectRpc(MetricsHub(FakeCtx(), ENV))
    ws, big_binary = await subscribe(hub), await subscribe(hub)
    await hub.webSocketMessage(ws, "x" * 70_000)
    assert ws.closed == (1009, "message too big")
    await hub.webSocketMessage(big_binary, types.SimpleNamespace(byteLength=70_000))  # a JS ArrayBuffer
    assert big_binary.closed == (1009, "message too big")
    other = await subscribe(hub)
    await hub.webSocketMessage(other, "x" * 5000)  # over 4 KiB but under 64 KiB: an error message
    assert other.closed is None and other.messages()[-1]["type"] == "error"


async def test_analytics_and_prometheus_are_rpc_methods_of_the_hub(clock: FakeClock):
    hub = DirectRpc(MetricsHub(FakeCtx(), ENV))
    await hub.publish([event(tokens_in=3, tokens_out=2, cost_usd=0.25), event(status=502, upstream_status=503),
                       {"type": "ratelimit_degraded", "mode": "fail_open", "policies": ["default"]}])
    analytics = await hub.analytics("1h")
    assert list(analytics["windows"]) == ["1h"]
    assert analytics["windows"]["1h"]["requests"] == 2  # the degraded report is not a request
    assert any(e["event"] == "ratelimit_degraded" for e in analytics["recent_events"])
    text = await hub.prometheus()
    assert 'flaregate_requests_total{provider="mock",model="mock-1",key="-"} 2' in text
    assert 'flaregate_operational_events_total{type="ratelimit_degraded"} 1' in text
    assert (await hub.snapshot())["totals"]["cost_usd"] == 0.25


async def test_ingest_is_one_transaction_sync_on_the_durable_object(clock: FakeClock):
    ctx = FakeCtx()
    hub = DirectRpc(MetricsHub(ctx, ENV))
    before = ctx.storage.transactions
    await hub.publish([event(), event(), event()])
    assert ctx.storage.transactions == before + 1


async def test_the_alarm_compacts_and_a_new_instance_keeps_lifetime_totals_and_retention_rows(clock: FakeClock):
    ctx = FakeCtx()
    hub = DirectRpc(MetricsHub(ctx, ENV))
    await hub.publish([event(cache_bytes_saved=0, bytes_saved=100, tokens_saved=7, cache="HIT")])
    await hub.publish([event()])
    clock.advance(2 * 3600)  # two hours later the alarm rolls the hour up
    due = ctx.storage.alarm
    assert due is not None
    await fire_alarm(hub, ctx.storage)
    sql = ctx.storage.sql.db
    hourly = sql.execute("SELECT SUM(requests) FROM hub_rollup WHERE resolution = 3600").fetchone()[0]
    assert hourly == 2
    assert sql.execute("SELECT COUNT(*) FROM hub_rollup WHERE resolution = 60").fetchone()[0] == 0  # expired
    assert ctx.storage.alarm is not None  # still scheduled: the hourly rows need compacting later

    woken = DirectRpc(MetricsHub(ctx, ENV))  # re-instantiated over the same storage (hibernation, eviction)
    totals = (await woken.snapshot())["totals"]
    assert totals["requests"] == 2 and totals["cache_hits"] == 1
    assert totals["cache_bytes_saved"] == 100 and totals["cache_tokens_saved"] == 7
    day = (await woken.analytics("24h"))["windows"]["24h"]
    assert day["requests"] == 2
    assert 'flaregate_cache_bytes_saved_total{provider="mock",model="mock-1",key="-"} 100' in await woken.prometheus()
