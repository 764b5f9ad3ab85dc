"""The core pipeline end to end with in-memory ports (no sockets): every step and error."""

import json

import pytest

from flaregate.config import settings_from_vars
from flaregate.gateway import Gateway
from flaregate.hosts.local.runtime import LocalHubClient, LocalRateLimiterClient
from flaregate.http import Headers, Request
from flaregate.hub.aggregator import MetricsHub
from flaregate.ports import Ports, UpstreamError, UpstreamTimeout
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

KEY = "gw-test-key"


class ScriptedTransport:
    """Answers upstream calls from a script: a StaticResponse, or an exception to raise.
    The last step repeats once the script runs out (retries see the same answer)."""

    def __init__(self, *script):
        self.script = list(script)
        self.calls = []

    async def send(self, method, url, headers, body, timeout):
        self.calls.append({"url": url, "headers": dict(headers), "body": json.loads(body)})
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return step


def ok_completion(content="hi"):
    body = {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    return StaticResponse(200, {"content-type": "application/json"}, [json.dumps(body).encode()])


class BrokenStream(StaticResponse):
    async def aiter_bytes(self):
        yield b'data: {"choices": []}\n\n'
        raise UpstreamError("connection reset")


def build(vars=None, transport=None):
    clock = FakeClock()
    sql = MemorySql()
    hub = MetricsHub(sql, clock, RecordingBroadcaster(), RecordingScheduler())
    tasks = InlineTasks()
    ports = Ports(clock=clock, cache=MemoryKV(clock), upstream=transport or ScriptedTransport(), tasks=tasks,
                  rate_limiter=LocalRateLimiterClient(RateLimiter(sql, clock)), metrics_hub=LocalHubClient(hub))
    providers = json.dumps([{"name": "mock", "kind": "mock"},
                            {"name": "a", "base_url": "http://a.invalid/v1", "api_key_env": "A_API_KEY"},
                            {"name": "b", "base_url": "http://b.invalid/v1"}])
    base = {"FLAREGATE_API_KEYS": KEY, "FLAREGATE_PROVIDERS": providers, "A_API_KEY": "sk-upstream",
            "FLAREGATE_ROUTES": json.dumps({"mock-1": ["mock"], "ab": ["a", "b"], "a": ["a"]})}
    gateway = Gateway(settings_from_vars({**base, **(vars or {})}), ports)

    async def sleep(seconds):  # backoff and cooldown waits pass on the fake clock
        clock.advance(seconds)

    gateway.upstream.sleep = sleep
    return gateway, hub, tasks


def chat(body=None, *, key=KEY, ctype="application/json", raw=None, headers=()):
    payload = raw if raw is not None else json.dumps(
        body or {"model": "mock-1", "messages": [{"role": "user", "content": "hello"}]}).encode()
    hs = [("content-type", ctype), *headers] + ([("authorization", f"Bearer {key}")] if key else [])
    return Request("POST", "/v1/chat/completions", Headers(hs), payload)


async def collect(body):
    return b"".join([chunk async for chunk in body])


async def test_chat_miss_then_hit_with_headers_and_analytics():
    gateway, hub, tasks = build()
    first = await gateway.handle(chat(headers=[("x-request-id", "abc-123")]))
    assert first.status == 200, first.body
    assert json.loads(first.body)["choices"][0]["message"]["content"] == "Flaregate mock reply to: hello"
    assert first.headers["x-request-id"] == "abc-123"
    assert first.headers["x-flaregate-cache"] == "MISS"
    assert first.headers["x-flaregate-provider"] == "mock"
    for phase in ("parse", "auth", "ratelimit", "route", "cache", "upstream", "total"):
        assert f"{phase};dur=" in first.headers["server-timing"]
    second = await gateway.handle(chat())
    assert second.headers["x-flaregate-cache"] == "HIT" and second.body == first.body
    await tasks.drain()
    totals = hub.snapshot()["totals"]
    assert totals["requests"] == 2 and totals["cache_hits"] == 1 and totals["tokens_in"] == 1


async def test_streaming_passes_chunks_and_records_when_done():
    gateway, hub, tasks = build()
    response = await gateway.handle(chat({"model": "mock-1", "stream": True,
                                          "messages": [{"role": "user", "content": "a b c"}]}))
    assert response.is_stream and response.headers["content-type"] == "text/event-stream"
    await tasks.drain()
    assert hub.snapshot()["totals"]["requests"] == 0  # recorded only once the stream ends
    text = (await collect(response.body)).decode()
    assert text.endswith("data: [DONE]\n\n")
    await tasks.drain()
    assert hub.snapshot()["totals"]["requests"] == 1


@pytest.mark.parametrize(
    ("request_", "status", "code"),
    [
        (chat(raw=b"{nope"), 400, "invalid_json"),
        (chat(raw=b"[1, 2]"), 400, "invalid_json"),
        (chat(raw=b"\xff\xfe"), 400, "invalid_json"),
        (chat(ctype="text/plain"), 415, "unsupported_media_type"),
        (chat({"messages": [{"role": "user", "content": "x"}]}), 400, "missing_required_parameter"),
        (chat({"model": "mock-1"}), 400, "missing_required_parameter"),
        (chat({"model": "mock-1", "messages": []}), 400, "invalid_value"),
        (chat({"model": "mock-1", "messages": [{"role": "wizard"}]}), 400, "invalid_value"),
        (chat({"model": "mock-1", "stream": "yes", "messages": [{"role": "user"}]}), 400, "invalid_value"),
        (chat({"model": 5, "messages": [{"role": "user"}]}), 400, "invalid_value"),
        (chat({"model": "nope", "messages": [{"role": "user", "content": "x"}]}), 404, "model_not_found"),
        (chat(key=None), 401, "invalid_api_key"),
        (chat(key="wrong"), 401, "invalid_api_key"),
        (chat(raw=b"{" + b" " * 2_000_000 + b"}"), 413, "request_too_large"),
        (Request("GET", "/v1/chat/completions"), 405, "method_not_allowed"),
        (Request("GET", "/nowhere"), 404, "unknown_url"),
    ],
)
async def test_bad_input_gets_an_openai_error_never_a_5xx(request_, status, code):
    gateway, _, _ = build()
    response = await gateway.handle(request_)
    assert response.status == status
    error = json.loads(response.body)["error"]
    assert error["code"] == code and error["message"]
    assert KEY not in response.body.decode()


async def test_rate_limit_sixth_request_gets_429_with_headers():
    gateway, hub, tasks = build({"RATE_LIMIT_CAPACITY": "5", "RATE_LIMIT_REFILL_PER_SECOND": "0.01"})
    statuses = [(await gateway.handle(chat())) for _ in range(6)]
    assert [r.status for r in statuses] == [200] * 5 + [429]
    limited = statuses[-1]
    assert limited.headers["retry-after"] == "100"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.headers["x-ratelimit-limit-requests"] == "5"
    assert json.loads(limited.body)["error"]["type"] == "rate_limit_error"
    await tasks.drain()
    assert hub.snapshot()["totals"]["rate_limited"] == 1


async def test_failover_to_the_next_target_and_credentials_stay_upstream():
    transport = ScriptedTransport(StaticResponse(503, {}, [b"{}"]), ok_completion("from b"))
    gateway, _, _ = build(transport=transport)
    response = await gateway.handle(chat({"model": "ab", "messages": [{"role": "user", "content": "x"}]},
                                         headers=[("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01")]))
    assert response.status == 200 and response.headers["x-flaregate-provider"] == "b"
    first, second = transport.calls
    assert first["headers"]["authorization"] == "Bearer sk-upstream"
    assert "authorization" not in second["headers"]  # b has no key; the gateway key never leaks
    assert first["body"]["model"] == "ab"
    assert first["headers"]["traceparent"].startswith("00-" + "1" * 32 + "-")
    assert not first["headers"]["traceparent"].endswith("2" * 16 + "-01")


@pytest.mark.parametrize(
    ("script", "status", "code"),
    [
        ([UpstreamError("refused")], 502, "upstream_unreachable"),
        ([UpstreamTimeout("slow")], 504, "upstream_timeout"),
        ([StaticResponse(500, {}, [b'{"error": {"message": "boom"}}'])], 502, "upstream_error"),
        ([StaticResponse(200, {}, [b"not json"])], 502, "upstream_malformed_response"),
        ([StaticResponse(400, {}, [b'{"error": {"message": "bad tool"}}'])], 400, "upstream_rejected"),
        ([StaticResponse(429, {"retry-after": "7"}, [b"{}"])], 503, "upstream_rate_limited"),
    ],
)
async def test_upstream_failures_are_reported_honestly(script, status, code):
    gateway, _, _ = build(transport=ScriptedTransport(*script))
    response = await gateway.handle(chat({"model": "a", "messages": [{"role": "user", "content": "x"}]}))
    assert response.status == status
    assert json.loads(response.body)["error"]["code"] == code
    assert "sk-upstream" not in response.body.decode()


async def test_a_stream_broken_midway_ends_with_an_error_event():
    transport = ScriptedTransport(BrokenStream(200, {"content-type": "text/event-stream"}, []))
    gateway, hub, tasks = build(transport=transport)
    response = await gateway.handle(chat({"model": "a", "stream": True, "messages": [{"role": "user", "content": "x"}]}))
    text = (await collect(response.body)).decode()
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[-2])["error"]["code"] == "upstream_stream_interrupted"
    assert events[-1] == "[DONE]"
    await tasks.drain()
    assert hub.snapshot()["totals"]["errors"] == 1


async def test_models_and_health():
    gateway, _, _ = build()
    models = await gateway.handle(Request("GET", "/v1/models", Headers([("authorization", f"Bearer {KEY}")])))
    assert {m["id"] for m in json.loads(models.body)["data"]} == {"mock-1", "ab", "a"}
    assert (await gateway.handle(Request("GET", "/v1/models"))).status == 401
    assert json.loads((await gateway.handle(Request("GET", "/health"))).body)["status"] == "ok"
