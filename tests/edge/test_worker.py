"""The Worker entry end to end under CPython: entry.Default -> core -> fake bindings/DOs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import js
import pytest

import entry
from flaregate.hosts.edge import rpc as edge_rpc
from flaregate.hosts.edge import worker as edge_worker
from flaregate.hosts.edge.ports import FetchTransport, KVStore, bind
from flaregate.ports import UpstreamError, UpstreamTimeout
from flaregate.security.keys import key_id

from .conftest import (
    ADMIN_KEY,
    API_KEY,
    FakeBodyStream,
    FakeCtx,
    FakeFetchResponse,
    FakeKV,
    FakeReadable,
    FakeRequest,
    FakeResponse,
)

BASE = "https://flaregate.example.workers.dev"
AUTH = {"authorization": f"Bearer {API_KEY}"}
CHAT = {"model": "mock-1", "messages": [{"role": "user", "content": "hello edge"}]}


def chat_request(body: Any = CHAT, headers: dict[str, str] | None = None) -> FakeRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    merged = {"content-type": "application/json", **AUTH, "cf-connecting-ip": "203.0.113.9"}
    return FakeRequest("POST", f"{BASE}/v1/chat/completions", {**merged, **(headers or {})}, raw)


async def call(env: Any, request: FakeRequest, ctx: FakeCtx | None = None) -> FakeResponse:
    ctx = ctx or FakeCtx()
    return await entry.Default(ctx, env).fetch(request)


async def test_health(make_env):
    response = await call(make_env(), FakeRequest("GET", f"{BASE}/health"))
    assert response.status == 200
    assert response.json()["status"] == "ok"
    assert response.json()["environment"] == "development"
    assert response.headers["x-request-id"]


async def test_chat_completion_then_cache_hit(make_env):
    env, ctx = make_env(), FakeCtx()
    first = await call(env, chat_request(), ctx)
    assert first.status == 200
    completion = first.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "Flaregate mock reply to: hello edge"
    assert first.headers["x-request-id"].startswith("req_")
    assert "total;dur=" in first.headers["server-timing"]
    assert first.headers["x-flaregate-cache"] == "MISS"
    assert first.headers["x-flaregate-provider"] == "mock"
    assert first.headers["x-ratelimit-limit-requests"] == "100"
    await ctx.drain()  # the warm write runs after the response, through ctx.waitUntil
    # The default TTL (300 s) ends within the warm tier's hour: the Cache API holds it, KV not.
    url, headers = js.caches.default.puts[-1]
    assert url.startswith(f"{BASE}/__flaregate/cache/fg/c2/") and headers["cache-control"] == "max-age=300"
    assert env.CACHE.puts == []

    second = await call(env, chat_request(headers={"x-request-id": "client-id-1"}))
    assert second.status == 200
    assert second.headers["x-flaregate-cache"] == "HIT"
    assert second.headers["x-request-id"] == "client-id-1"
    assert second.json() == completion
    assert env.CACHE.puts == []


async def test_a_long_lived_answer_is_written_to_kv_too(make_env):
    env, ctx = make_env(), FakeCtx()
    body = {**CHAT, "messages": [{"role": "user", "content": "keep this for two hours"}]}
    response = await call(env, chat_request(body, headers={"x-flaregate-cache-ttl": "7200"}), ctx)
    assert response.status == 200
    await ctx.drain()
    [put] = env.CACHE.puts
    assert put["expirationTtl"] == 7200
    assert js.caches.default.puts[-1][1]["cache-control"] == "max-age=3600"  # warm: at most an hour


async def test_a_short_ttl_miss_reads_no_kv_and_a_long_one_does(make_env):
    """A request reads the tiers its own TTL would write: 300 s fits the warm tier's hour."""
    env, ctx = make_env(), FakeCtx()
    entries = lambda: [k for k in env.CACHE.gets if k.startswith("fg:c2:")]  # noqa: E731 (cache entries, not generations)
    body = {**CHAT, "messages": [{"role": "user", "content": "short-lived question"}]}
    assert (await call(env, chat_request(body), ctx)).headers["x-flaregate-cache"] == "MISS"
    assert entries() == []  # no KV read on a default-TTL miss
    body = {**CHAT, "messages": [{"role": "user", "content": "long-lived question"}]}
    assert (await call(env, chat_request(body, headers={"x-flaregate-cache-ttl": "7200"}), ctx)).status == 200
    assert len(entries()) == 1  # a TTL past the warm hour looks in KV first


async def test_streaming_chat_writes_sse_to_the_transform_stream(make_env):
    env, ctx = make_env(), FakeCtx()
    response = await call(env, chat_request({**CHAT, "stream": True}), ctx)
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert isinstance(response.body, FakeReadable)
    writer = response.body.writer
    assert writer.chunks == []  # nothing is written before the response is returned
    await ctx.drain()
    assert writer.is_closed
    text = response.body.data().decode()
    events = [line for line in text.split("\n\n") if line]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    deltas = [json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events[:-1]]
    assert "".join(deltas) == "Flaregate mock reply to: hello edge"
    # The stream's analytics event was published once the stream ended.
    snapshot = await edge_rpc.call(env.METRICS_HUB.getByName("global"), "snapshot")
    assert snapshot["totals"]["requests"] == 1


async def test_client_gone_mid_stream_still_closes_and_records(make_env):
    env, ctx = make_env(), FakeCtx()
    response = await call(env, chat_request({**CHAT, "stream": True}), ctx)
    response.body.writer.fail = True
    await ctx.drain()
    assert response.body.writer.is_closed
    snapshot = await edge_rpc.call(env.METRICS_HUB.getByName("global"), "snapshot")
    assert snapshot["totals"]["requests"] == 1


async def test_glue_failure_is_an_openai_500(make_env):
    class Broken(FakeRequest):
        async def bytes(self) -> bytes:
            raise OSError("Body already used")

    response = await call(make_env(), Broken("POST", f"{BASE}/v1/chat/completions", AUTH, b"{}"))
    assert response.status == 500
    assert response.json()["error"]["code"] == "internal_error"


async def test_bad_json_is_400(make_env):
    response = await call(make_env(), chat_request(b"{not json"))
    assert response.status == 400
    assert response.json()["error"]["code"] == "invalid_json"


async def test_missing_key_is_401(make_env):
    request = FakeRequest("POST", f"{BASE}/v1/chat/completions",
                          {"content-type": "application/json"}, json.dumps(CHAT).encode())
    response = await call(make_env(), request)
    assert response.status == 401
    assert response.json()["error"]["type"] == "authentication_error"


async def test_declared_oversize_body_is_refused_without_buffering_it(make_env):
    request = chat_request(headers={"content-length": "5000"})
    response = await call(make_env(MAX_BODY_BYTES="2048"), request)
    assert response.status == 413
    assert request.body_reads == 0


async def test_a_refused_body_is_drained_before_the_413_up_to_the_limit(make_env, monkeypatch):
    small = chat_request({**CHAT, "pad": "x" * 200_000}, headers={"content-length": "300000"})
    response = await call(make_env(MAX_BODY_BYTES="2048"), small)
    assert response.status == 413
    stream = small.js_object.body
    assert stream.chunks_read == len(stream._chunks) and not stream.cancelled  # read to its end
    monkeypatch.setattr(edge_worker, "DRAIN_LIMIT_BYTES", 100_000)
    big = chat_request({**CHAT, "pad": "x" * 400_000}, headers={"content-length": "500000"})
    response = await call(make_env(MAX_BODY_BYTES="2048"), big)
    assert response.status == 413 and big.js_object.body.cancelled  # past the limit: cancelled


async def test_a_chunked_body_is_read_no_further_than_the_limit(make_env, monkeypatch):
    """No Content-Length (chunked): read in pieces, refused at the limit, never buffered whole."""
    monkeypatch.setattr(edge_worker, "DRAIN_LIMIT_BYTES", 200_000)
    raw = json.dumps({**CHAT, "pad": "x" * 2_000_000}).encode()
    big = FakeRequest("POST", f"{BASE}/v1/chat/completions", {"content-type": "application/json", **AUTH}, raw,
                      chunked=True)
    response = await call(make_env(MAX_BODY_BYTES="100000"), big)
    assert response.status == 413 and response.json()["error"]["code"] == "request_too_large"
    stream = big.js_object.body
    assert big.body_reads == 0 and stream.cancelled  # never read whole; cancelled past the drain limit
    assert stream.chunks_read * 65536 <= 200_000 + 2 * 65536
    small = FakeRequest("POST", f"{BASE}/v1/chat/completions", {"content-type": "application/json", **AUTH},
                        json.dumps(CHAT).encode(), chunked=True)
    response = await call(make_env(MAX_BODY_BYTES="100000"), small)
    assert response.status == 200


async def test_rate_limit_sixth_request_is_429_in_the_key_durable_object(make_env):
    env = make_env(RATE_LIMIT_CAPACITY="5")
    statuses = []
    for i in range(6):
        response = await call(env, chat_request({**CHAT, "messages": [{"role": "user", "content": f"m{i}"}]}))
        statuses.append(response.status)
    assert statuses == [200] * 5 + [429]
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    expected = f"key:{key_id(API_KEY)}"
    assert set(env.RATE_LIMITER.names) == {expected}
    assert list(env.RATE_LIMITER.instances) == [expected]  # one DO per limit key


ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
UPGRADE = {"upgrade": "websocket"}


@pytest.mark.parametrize("headers", [{}, AUTH, {"authorization": "Bearer wrong"},
                                     {"sec-websocket-protocol": "flaregate.v1, bearer.wrong"}])
async def test_ws_without_the_admin_key_is_401_and_never_reaches_the_hub(make_env, headers):
    env = make_env()
    response = await call(env, FakeRequest("GET", f"{BASE}/ws", {**UPGRADE, **headers}))
    assert response.status == 401  # a gateway key is for the API, not for the hub
    assert env.METRICS_HUB.names == []


async def test_ws_without_an_admin_key_configured_is_closed(make_env):
    env = make_env()
    del env.FLAREGATE_ADMIN_KEY
    response = await call(env, FakeRequest("GET", f"{BASE}/ws?token=anything", UPGRADE))
    assert response.status == 403 and response.json()["error"]["code"] == "admin_disabled"


async def test_ws_without_upgrade_is_426(make_env):
    response = await call(make_env(), FakeRequest("GET", f"{BASE}/ws", ADMIN))
    assert response.status == 426
    assert response.json()["error"]["code"] == "upgrade_required"


async def test_ws_with_token_is_forwarded_to_the_hub_which_accepts_and_greets(make_env):
    env = make_env()
    request = FakeRequest("GET", f"{BASE}/ws?token={ADMIN_KEY}", UPGRADE)
    response = await call(env, request)
    assert response.status == 101
    assert response.web_socket is not None
    assert "sec-websocket-protocol" not in response.headers  # none offered, none selected
    assert env.METRICS_HUB.names == ["global"]
    [(server, tags)] = env.METRICS_HUB.ctxs["global"].accepted
    assert tags == ["metrics"]
    hello, welcome = server.messages()  # the whole greeting, in order
    assert hello["type"] == "hello" and hello["protocol"] == 1 and hello["max_frame_bytes"] == 65536
    assert welcome["type"] == "snapshot"
    assert welcome["metrics"]["subscribers"] == 1


async def test_ws_subprotocol_key_selects_flaregate_v1_in_the_101_and_is_never_echoed(make_env):
    env = make_env()
    offered = {**UPGRADE, "sec-websocket-protocol": f"flaregate.v1, bearer.{ADMIN_KEY}"}
    response = await call(env, FakeRequest("GET", f"{BASE}/ws", offered))
    assert response.status == 101
    assert response.headers["sec-websocket-protocol"] == "flaregate.v1"
    assert ADMIN_KEY not in json.dumps(response.headers)


async def test_a_client_cannot_choose_the_subprotocol_header_the_worker_sets(make_env):
    env = make_env()
    forged = {**ADMIN, **UPGRADE, "x-flaregate-subprotocol": "flaregate.v1"}  # nothing offered
    response = await call(env, FakeRequest("GET", f"{BASE}/ws", forged))
    assert response.status == 101 and "sec-websocket-protocol" not in response.headers


@pytest.mark.parametrize("path", ["/metrics", "/v1/analytics?window=1h"])
async def test_operator_endpoints_are_served_from_the_hub_over_rpc(make_env, path):
    env, ctx = make_env(), FakeCtx()
    await call(env, chat_request(), ctx)
    await ctx.drain()
    assert (await call(env, FakeRequest("GET", f"{BASE}{path}", AUTH))).status == 401  # gateway key
    response = await call(env, FakeRequest("GET", f"{BASE}{path}", ADMIN))
    assert response.status == 200
    body = response.body.decode()
    if path == "/metrics":
        assert response.headers["content-type"].startswith("text/plain")
        assert 'flaregate_requests_total{provider="mock",model="mock-1"' in body
    else:
        window = json.loads(body)["windows"]["1h"]
        assert window["requests"] == 1 and list(window["by_provider"]) == ["mock"]


async def test_health_carries_the_hub_health_score(make_env):
    response = await call(make_env(), FakeRequest("GET", f"{BASE}/health"))
    assert response.status == 200 and response.json()["health"]["score"] == 100


async def test_analytics_reach_the_hub_through_wait_until(make_env):
    env, ctx = make_env(), FakeCtx()
    await call(env, chat_request(), ctx)
    hub = env.METRICS_HUB
    assert "global" not in hub.instances  # nothing published before waitUntil work runs
    assert ctx.waiting
    await ctx.drain()
    snapshot = await edge_rpc.call(hub.getByName("global"), "snapshot")
    assert snapshot["totals"]["requests"] == 1
    assert snapshot["totals"]["cache_misses"] == 1
    assert list(snapshot["providers"]) == ["mock"]
    assert snapshot["providers"]["mock"]["requests"] == 1 and snapshot["providers"]["mock"]["errors"] == 0
    assert hub.ctxs["global"].storage.alarm_sets  # the hub asked for a tick


async def test_openai_provider_goes_through_workers_fetch(make_env, fake_http):
    env = make_env(OPENAI_API_KEY="sk-upstream", OPENAI_BASE_URL="https://llm.example/v1")
    upstream = {"id": "x", "object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 2}}
    fake_http.responses.append(FakeFetchResponse(
        200, {"Content-Type": "application/json"}, FakeBodyStream([json.dumps(upstream).encode()])))
    response = await call(env, chat_request({**CHAT, "model": "gpt-x"}))
    assert response.status == 200
    assert response.json() == upstream
    [sent] = fake_http.calls
    assert sent["url"] == "https://llm.example/v1/chat/completions"
    assert sent["method"] == "POST"
    assert sent["headers"]["authorization"] == "Bearer sk-upstream"
    assert sent["headers"]["traceparent"].startswith("00-")
    assert json.loads(sent["body"])["model"] == "gpt-x"


async def test_invalid_configuration_is_a_500_without_details(make_env):
    response = await call(make_env(FLAREGATE_ROUTES="{broken"), FakeRequest("GET", f"{BASE}/health"))
    assert response.status == 500
    assert response.json()["error"]["code"] == "configuration_error"
    assert "broken" not in response.body.decode()


async def test_placeholder_secrets_in_production_are_a_503_without_details(make_env):
    env = make_env(ENVIRONMENT="production", FLAREGATE_ADMIN_KEY="fga-change-me")
    for request in (FakeRequest("GET", f"{BASE}/health"), chat_request()):
        response = await call(env, request)
        assert response.status == 503
        assert response.json()["error"]["code"] == "misconfigured"
        assert "change-me" not in response.body.decode() and "ADMIN" not in response.body.decode()


# -- the ports on their own ------------------------------------------------------------------
async def test_kv_ttl_is_raised_to_the_kv_minimum():
    kv = FakeKV()
    with bind(type("Env", (), {"CACHE": kv})(), FakeCtx()):
        store = KVStore()
        await store.put("k", "v", 5)
        assert await store.get("k") == "v"
        await store.delete("k")
        assert await store.get("k") is None
    assert kv.puts == [{"key": "k", "value": "v", "expirationTtl": 60}]


async def test_transport_streams_and_lowercases_headers(fake_http):
    body = FakeBodyStream([b"data: 1\n\n", b"data: [DONE]\n\n"])
    fake_http.responses.append(FakeFetchResponse(200, {"Content-Type": "text/event-stream"}, body))
    response = await FetchTransport().send("POST", "https://u.example", {"a": "b"}, b"{}", 5)
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert [c async for c in response.aiter_bytes()] == [b"data: 1\n\n", b"data: [DONE]\n\n"]
    await response.aclose()
    assert not body.cancelled  # fully read: nothing to cancel


async def test_transport_maps_js_errors_and_timeouts(fake_http):
    transport = FetchTransport()
    fake_http.responses.append(OSError("Network connection lost."))
    with pytest.raises(UpstreamError, match="Network connection lost"):
        await transport.send("POST", "https://u.example", {}, b"", 5)

    async def never() -> None:
        await asyncio.sleep(10)

    fake_http.responses.append(never)
    with pytest.raises(UpstreamTimeout):
        await transport.send("POST", "https://u.example", {}, b"", 0.05)


async def test_transport_stream_failure_and_idle_timeout(fake_http):
    transport = FetchTransport()
    broken = FakeBodyStream([b"a", b"b"], fail_after=1)
    fake_http.responses.append(FakeFetchResponse(200, {}, broken))
    response = await transport.send("GET", "https://u.example", {}, b"", 5)
    with pytest.raises(UpstreamError):
        [c async for c in response.aiter_bytes()]

    slow = FakeBodyStream([b"a"], delay=1)
    fake_http.responses.append(FakeFetchResponse(200, {}, slow))
    response = await transport.send("GET", "https://u.example", {}, b"", 0.05)
    with pytest.raises(UpstreamTimeout):
        await response.read()
    await response.aclose()
    assert slow.cancelled  # an unfinished body is cancelled


async def test_transport_cancels_a_body_it_started_reading(fake_http):
    # The stream is locked to the transport's reader once read: cancel must go through it.
    body = FakeBodyStream([b"a", b"b", b"c"])
    fake_http.responses.append(FakeFetchResponse(200, {}, body))
    response = await FetchTransport().send("GET", "https://u.example", {}, b"", 5)
    chunks = response.aiter_bytes()
    assert await anext(chunks) == b"a"
    await response.aclose()
    assert body.cancelled
