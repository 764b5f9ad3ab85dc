"""Retries, failover, deadlines and honest failures, through the gateway with in-memory ports."""

import asyncio
import json

from flaregate.config import settings_from_vars
from flaregate.gateway import Gateway
from flaregate.hosts.local.runtime import LocalHubClient, LocalRateLimiterClient
from flaregate.http import Headers, Request
from flaregate.hub.aggregator import MetricsHub
from flaregate.ports import Ports
from flaregate.providers.mock import StaticResponse
from flaregate.ratelimits.limiter import RateLimiter
from tests.support.fakes import (
    FakeClock,
    InlineTasks,
    MemoryKV,
    MemorySql,
    RecordingBroadcaster,
    RecordingScheduler,
)

KEY = "gw-key"


class ScriptedTransport:
    def __init__(self, *script):
        self.script = list(script)
        self.calls = []

    async def send(self, method, url, headers, body, timeout):
        self.calls.append(url)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        if callable(step):
            return await step()
        return step


def ok(content="hi"):
    body = {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
    return StaticResponse(200, {"content-type": "application/json"}, [json.dumps(body).encode()])


def build(routes, providers=None, transport=None, **vars):
    clock = FakeClock()
    sql = MemorySql()
    broadcaster = RecordingBroadcaster()
    hub = MetricsHub(sql, clock, broadcaster, RecordingScheduler())
    tasks = InlineTasks()
    ports = Ports(clock=clock, cache=MemoryKV(clock), upstream=transport or ScriptedTransport(ok()), tasks=tasks,
                  rate_limiter=LocalRateLimiterClient(RateLimiter(sql, clock)), metrics_hub=LocalHubClient(hub))
    providers = providers or [{"name": "good", "kind": "mock"}, {"name": "bad", "kind": "mock"},
                              {"name": "net", "base_url": "http://net.invalid/v1"}]
    settings = settings_from_vars({"FLAREGATE_API_KEYS": KEY, "FLAREGATE_PROVIDERS": json.dumps(providers),
                                   "FLAREGATE_ROUTES": json.dumps(routes), "CACHE_TTL_SECONDS": "0", **vars})
    gateway = Gateway(settings, ports)
    sleeps = []

    async def sleep(seconds):
        sleeps.append(seconds)
        clock.advance(seconds)

    gateway.upstream.sleep = sleep
    gateway.sleeps = sleeps
    return gateway, tasks, broadcaster, clock


def chat(model, stream=False, headers=()):
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "one two three"}]}
    hs = [("content-type", "application/json"), ("authorization", f"Bearer {KEY}"), *headers]
    return Request("POST", "/v1/chat/completions", Headers(hs), json.dumps(body).encode())


async def text_of(response):
    return b"".join([c async for c in response.body]).decode()


def sse_data(text):
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


async def providers_report(gateway):
    response = await gateway.handle(Request("GET", "/v1/providers", Headers([("authorization", f"Bearer {KEY}")])))
    assert response.status == 200
    return {(e["provider"], e["model"]): e for e in json.loads(response.body)["data"]}


async def test_every_fault_fails_over_to_the_healthy_target_streaming_and_not():
    faults = ["500", "502", "503", "429", "timeout", "unreachable", "malformed", "stream_error"]
    routes = {f"r-{f}": [f"bad/fail-{f}", "good"] for f in faults}
    gateway, tasks, broadcaster, clock = build(routes)
    for fault in faults:
        for stream in (True,) if fault.startswith("stream") else (False, True):
            clock.advance(2)  # past the 429's Retry-After cooldown
            response = await gateway.handle(chat(f"r-{fault}", stream))
            assert response.status == 200, (fault, stream, response.body)
            assert response.headers["x-flaregate-provider"] == "good"
            assert response.headers["x-flaregate-attempts"] == "2"
            if stream:
                assert sse_data(await text_of(response))[-1] == "[DONE]"
    await tasks.drain()
    # The raw relays (the hub also sends folded {"type": "event", "event": "failover"} ones).
    failovers = [m for m in map(json.loads, broadcaster.sent) if m["type"] == "failover"]
    assert {f["from"] for f in failovers} >= {f"bad/fail-{f}" for f in faults}
    assert all(f["to"].startswith("good/") for f in failovers)


async def test_a_stream_cut_after_it_began_ends_with_an_error_event_and_counts_against_health():
    gateway, tasks, _, _ = build({"cut": ["bad/fail-stream_cut", "good"]})
    response = await gateway.handle(chat("cut", stream=True))
    assert response.status == 200 and response.headers["x-flaregate-provider"] == "bad"
    events = sse_data(await text_of(response))
    assert json.loads(events[-2])["error"]["code"] == "upstream_stream_interrupted"
    assert events[-1] == "[DONE]"
    report = await providers_report(gateway)
    entry = report[("bad", "fail-stream_cut")]
    assert entry["failures"] == 1 and entry["recent_errors"][0]["kind"] == "stream_interrupted"
    assert entry["in_flight"] == 0


async def test_no_healthy_target_gives_the_matching_status_with_attempt_count():
    cases = {"500": (502, "upstream_error"), "unreachable": (502, "upstream_unreachable"),
             "malformed": (502, "upstream_malformed_response"), "timeout": (504, "upstream_timeout"),
             "429": (503, "upstream_rate_limited")}
    routes = {f"r-{f}": [f"bad/fail-{f}"] for f in cases}
    gateway, _, _, _ = build(routes, CIRCUIT_FAILURE_THRESHOLD="100", UPSTREAM_MAX_ATTEMPTS="3")
    for fault, (status, code) in cases.items():
        response = await gateway.handle(chat(f"r-{fault}"))
        error = json.loads(response.body)["error"]
        assert (response.status, error["code"]) == (status, code), fault
        assert response.headers["x-flaregate-attempts"] == "3"
        if status == 503:
            assert response.headers["retry-after"] == "1"


async def test_retries_back_off_exponentially_with_jitter_and_respect_retry_after():
    limited = StaticResponse(429, {"retry-after": "2"}, [b"{}"])
    transport = ScriptedTransport(StaticResponse(500, {}, [b"{}"]), StaticResponse(500, {}, [b"{}"]), limited, ok())
    gateway, _, _, _ = build({"n": ["net"]}, transport=transport,
                             RETRY_BACKOFF_BASE_SECONDS="1", RETRY_BACKOFF_MAX_SECONDS="8")
    response = await gateway.handle(chat("n"))
    assert response.status == 200 and response.headers["x-flaregate-attempts"] == "4"
    first, second, third = gateway.sleeps
    assert 0.5 <= first <= 1 and 1 <= second <= 2  # equal jitter: half fixed, half random
    assert third >= 2  # the Retry-After of the 429, not a shorter backoff


async def test_a_retry_after_longer_than_the_deadline_is_not_waited_for():
    transport = ScriptedTransport(StaticResponse(429, {"retry-after": "600"}, [b"{}"]))
    gateway, _, _, _ = build({"n": ["net"]}, transport=transport, UPSTREAM_DEADLINE_SECONDS="30")
    response = await gateway.handle(chat("n"))
    assert response.status == 503 and response.headers["retry-after"] == "600"
    assert len(transport.calls) == 1 and gateway.sleeps == []


async def test_an_open_circuit_fails_fast_and_the_pin_header_picks_a_provider():
    gateway, _, _, clock = build({"r": ["bad/fail-503", "good"], "only-bad": ["bad/fail-503"]},
                                 CIRCUIT_FAILURE_THRESHOLD="2", CIRCUIT_COOLDOWN_SECONDS="30")
    for _ in range(2):
        await gateway.handle(chat("only-bad"))
    report = await providers_report(gateway)
    assert report[("bad", "fail-503")]["circuit"] == "open"
    response = await gateway.handle(chat("only-bad"))
    assert response.status == 503 and json.loads(response.body)["error"]["code"] == "upstream_unavailable"
    assert response.headers["x-flaregate-attempts"] == "0" and response.headers["retry-after"] == "30"
    # The shared target's circuit is open, so route "r" goes straight to "good".
    response = await gateway.handle(chat("r"))
    assert response.headers["x-flaregate-attempts"] == "1"
    pinned = await gateway.handle(chat("r", headers=[("x-flaregate-provider", "good")]))
    assert pinned.headers["x-flaregate-provider"] == "good"
    wrong = await gateway.handle(chat("r", headers=[("x-flaregate-provider", "net")]))
    assert wrong.status == 400 and json.loads(wrong.body)["error"]["code"] == "invalid_provider"


async def test_the_deadline_bounds_slow_attempts():
    async def slow():
        await asyncio.sleep(5)

    transport = ScriptedTransport(slow)
    gateway, _, _, _ = build({"n": ["net"]}, transport=transport, UPSTREAM_DEADLINE_SECONDS="0.2",
                             UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS="0.1")
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await gateway.handle(chat("n"))
    assert response.status == 504 and json.loads(response.body)["error"]["code"] == "upstream_timeout"
    assert loop.time() - started < 2  # bounded by the deadline, not the 5 s upstream


async def test_client_errors_are_relayed_without_failover():
    transport = ScriptedTransport(StaticResponse(400, {}, [b'{"error": {"message": "bad tool"}}']), ok())
    gateway, _, _, _ = build({"n": ["net", "good"]}, transport=transport)
    response = await gateway.handle(chat("n"))
    assert response.status == 400 and len(transport.calls) == 1
    assert json.loads(response.body)["error"]["code"] == "upstream_rejected"


async def test_providers_endpoint_needs_the_gateway_key():
    gateway, _, _, _ = build({"r": ["good"]})
    response = await gateway.handle(Request("GET", "/v1/providers"))
    assert response.status == 401


async def test_latency_strategy_is_not_fooled_by_fast_failures_and_tracks_in_flight():
    routes = {"lat": {"strategy": "latency", "targets": ["bad/fail-unreachable", "good"]}}
    gateway, _, _, _ = build(routes)
    for _ in range(3):
        response = await gateway.handle(chat("lat"))
        assert response.headers["x-flaregate-provider"] == "good"
    report = await providers_report(gateway)
    bad, good = report[("bad", "fail-unreachable")], report[("good", "lat")]
    # Tried first while unmeasured; after its fast failure it ranks last for a cooldown.
    assert bad["latency_ewma_ms"] is None and bad["failures"] == 1
    assert good["latency_ewma_ms"] is not None and good["in_flight"] == 0
    assert bad["weight"] == 1.0 and report[("good", "lat")]["strategy"] == "latency"


async def test_a_pinned_request_never_gets_another_providers_cached_answer():
    gateway, _, _, _ = build({"r": ["good", "bad"]}, CACHE_TTL_SECONDS="300")
    first = await gateway.handle(chat("r"))
    assert first.headers["x-flaregate-provider"] == "good" and first.headers["x-flaregate-cache"] == "MISS"
    assert (await gateway.handle(chat("r"))).headers["x-flaregate-cache"] == "HIT"
    pinned = await gateway.handle(chat("r", headers=[("x-flaregate-provider", "bad")]))
    assert pinned.headers["x-flaregate-provider"] == "bad" and pinned.headers["x-flaregate-cache"] == "MISS"


async def test_a_failover_event_carries_the_requests_tags():
    """Failover events (relayed to webhooks and the hub) say whose traffic failed over."""
    gateway, tasks, broadcaster, clock = build({"r": ["bad/fail-500", "good"]})
    tags = json.dumps({"feature": "search"})
    response = await gateway.handle(chat("r", headers=[("x-flaregate-metadata", tags)]))
    assert response.status == 200
    await tasks.drain()
    failovers = [m for m in map(json.loads, broadcaster.sent) if m["type"] == "failover"]
    assert failovers and all(f["tags"] == {"feature": "search"} for f in failovers)
