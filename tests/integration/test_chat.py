"""Chat completions through the real server to the real mock upstream, with the openai SDK."""

import uuid

import httpx
import openai
import pytest

from .conftest import GATEWAY_KEY, UPSTREAM_KEY


def unique(text: str) -> list[dict]:
    # A unique message keeps tests independent of each other's cache entries.
    return [{"role": "user", "content": f"{text} {uuid.uuid4().hex[:8]}"}]


def test_non_streaming_completion(client, upstream):
    messages = unique("hello gateway")
    raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=messages)
    completion = raw.parse()
    assert completion.choices[0].message.content == f"echo: {messages[0]['content']}"
    assert completion.usage.total_tokens > 0
    assert raw.headers["x-flaregate-provider"] == "upstream"
    assert raw.headers["x-flaregate-cache"] == "MISS"
    assert raw.headers["x-request-id"]
    assert "upstream;dur=" in raw.headers["server-timing"]
    seen = upstream.stats()["requests"][-1]
    # The upstream sees its own key, never the gateway's, plus the trace context.
    assert seen["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert GATEWAY_KEY not in str(seen)
    assert seen["headers"]["x-request-id"] == raw.headers["x-request-id"]
    assert seen["headers"]["traceparent"].startswith("00-")


def test_streaming_completion_arrives_in_chunks(client):
    messages = unique("stream these words please")
    stream = client.chat.completions.create(model="gpt-test", messages=messages, stream=True)
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    assert len(pieces) > 3
    assert "".join(pieces) == f"echo: {messages[0]['content']}"


def test_second_identical_request_is_a_cache_hit(client, upstream):
    messages = unique("cache me")
    before = upstream.stats()["calls"].get("/v1/chat/completions", 0)
    first = client.chat.completions.with_raw_response.create(model="gpt-test", messages=messages, temperature=0)
    second = client.chat.completions.with_raw_response.create(model="gpt-test", messages=messages, temperature=0)
    assert first.headers["x-flaregate-cache"] == "MISS"
    assert second.headers["x-flaregate-cache"] == "HIT"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert upstream.stats()["calls"]["/v1/chat/completions"] == before + 1
    third = client.chat.completions.with_raw_response.create(model="gpt-test", messages=messages, temperature=1)
    assert third.headers["x-flaregate-cache"] == "MISS"  # a different temperature is a different answer


def test_builtin_mock_provider_answers(client):
    completion = client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "Flaregate mock reply to: hi"


def test_models_lists_the_routes(client):
    assert {"gpt-test", "mock-1"} <= {m.id for m in client.models.list()}


def test_unreachable_upstream_is_a_502(client):
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-dead", messages=unique("anyone there"))
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_unreachable"


def test_failover_skips_the_dead_target(client):
    raw = client.chat.completions.with_raw_response.create(model="gpt-failover", messages=unique("failover"))
    assert raw.headers["x-flaregate-provider"] == "upstream"


def test_upstream_5xx_without_fallback_is_a_502(client, upstream):
    # Every attempt (4 by default: the first and three retries) gets the 503.
    upstream.add_faults([{"kind": "status", "status": 503, "path": "/v1/chat/completions", "times": 4}])
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-test", messages=unique("fail"))
    assert info.value.status_code == 502
    assert info.value.response.headers["x-flaregate-attempts"] == "4"


def test_stream_cut_midway_ends_with_an_error_the_sdk_raises(client, upstream):
    upstream.add_faults([{"kind": "stream_cut", "after_chunks": 2, "path": "/v1/chat/completions"}])
    stream = client.chat.completions.create(model="gpt-test", messages=unique("one two three four five"), stream=True)
    with pytest.raises(openai.APIError, match="interrupted|ended before completion"):
        for _ in stream:
            pass


def test_the_raw_stream_is_well_formed_sse(gateway):
    body = {"model": "mock-1", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
