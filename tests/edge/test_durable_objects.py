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
from flaregate.objects.rate_limiter import RateLimiter as CoreRateLimiter
from tests.support.fakes import FakeClock, MemorySql

from .conftest import FakeCtx, FakeJsRow, FakeRequest, FakeStorage, FakeWebSocket

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
    limiter_do = RateLimiter(FakeCtx(), ENV)
    core = CoreRateLimiter(MemorySql(), core_clock)
    steps: list[tuple[str, float, float]] = [
        ("key:a", 1, 0), ("key:a", 1, 0), ("key:b", 1, 0), ("key:a", 1, 0), ("key:a", 1, 0),
        ("key:a", 1, 0.9), ("key:a", 1, 1.2), ("key:b", 2, 0), ("key:b", 2, 0), ("key:a", 1, 30),
    ]
    allowed = []
    for key, cost, wait in steps:
        do_clock.advance(wait)
        core_clock.advance(wait)
        # Over RPC the policy arrives as a JS object: the DO must convert it.
        got = limiter_do.check(key, FakeJsRow(POLICY), cost)
        assert got == core.check(key, POLICY, cost), (key, cost, wait)
        allowed.append(got["allowed"])
    assert True in allowed and False in allowed  # the sequence exercises both outcomes
    # The state is in DO SQL: a new instance over the same storage continues from it.
    again = RateLimiter(limiter_do.ctx, ENV)
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
    hub = MetricsHub(ctx, ENV)
    first, second = await subscribe(hub), await subscribe(hub)
    assert [ws.messages()[0]["type"] for ws in (first, second)] == ["snapshot", "snapshot"]
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


async def test_hub_events_as_js_objects_are_converted(clock: FakeClock):
    hub = MetricsHub(FakeCtx(), ENV)
    js_list = FakeJsRow({"unused": 0})
    js_list.to_py = lambda: [event(), event(cache="HIT")]  # type: ignore[method-assign]
    assert await hub.publish(js_list) == 2
    assert await hub.publish([FakeJsRow(event())]) == 1
    assert (await hub.snapshot())["totals"]["cache_hits"] == 1


async def test_hub_wakes_from_hibernation_with_its_totals_and_sockets(clock: FakeClock):
    ctx = FakeCtx()
    hub = MetricsHub(ctx, ENV)
    ws = await subscribe(hub)
    await hub.publish([event(), event()])
    await fire_alarm(hub, ctx.storage)
    before = await hub.snapshot()

    clock.advance(5)
    woken = MetricsHub(ctx, ENV)  # the runtime constructs the class again over the same storage
    after = await woken.snapshot()
    assert after["totals"] == before["totals"]
    assert after["uptime_s"] == before["uptime_s"] + 5  # started_at survived
    assert after["subscribers"] == 1  # sockets live in the runtime, not in Python memory
    await woken.publish([event()])
    await fire_alarm(woken, ctx.storage)
    assert ws.messages()[-1]["metrics"]["totals"]["requests"] == 3


async def test_hub_answers_client_frames(clock: FakeClock):
    hub = MetricsHub(FakeCtx(), ENV)
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
    hub = MetricsHub(ctx, ENV)
    broken, healthy = await subscribe(hub), await subscribe(hub)
    broken.fail_send = True
    await hub.publish([event()])
    await fire_alarm(hub, ctx.storage)
    assert healthy.messages()[-1]["type"] == "metrics"
    assert broken.closed is not None and broken.closed[0] == 1011
    assert ctx.getWebSockets("metrics") == [healthy]
    assert (await hub.snapshot())["subscribers"] == 1


async def test_close_and_error_handlers_never_raise(clock: FakeClock):
    hub = MetricsHub(FakeCtx(), ENV)
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
