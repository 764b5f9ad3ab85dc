"""Guardrails through the real gateway (both hosts): the provider only sees redacted text,
blocks are 400s with a code, output checks on whole answers and on each stream event."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from .conftest import GATEWAY_KEY, run_gateway, upstream_env

GUARDRAILS = {
    "policies": {"redact": {"pii": ["all"]}, "block": {"pii": ["card", "secret"], "action": "block"},
                 "out": {"pii": ["email"], "input": False}, "deny": {"deny_words": ["project x"], "max_tokens": 50}},
    "routes": {"gpt-test": "redact", "gpt-failover": "block", "mock-1": "out", "gpt-dead": "deny"},
}


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, CACHE_TTL_SECONDS="0", FLAREGATE_GUARDRAILS=json.dumps(GUARDRAILS))
    with run_gateway(tmp_path_factory.mktemp("guardrails"), env) as gw:
        yield gw


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20)


def _ask(client, model, text, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def test_redaction_happens_before_the_provider_sees_the_text(client, upstream):
    upstream.reset()
    reply = _ask(client, "gpt-test", "I am ada@example.com, card 4111 1111 1111 1111")
    sent = json.dumps(upstream.stats()["requests"][-1]["body"]["messages"])
    assert "ada@example.com" not in sent and "4111" not in sent
    assert "[REDACTED_EMAIL]" in sent and "[REDACTED_CARD]" in sent
    assert reply.choices[0].message.content == "echo: I am [REDACTED_EMAIL], card [REDACTED_CARD]"


def test_responses_input_is_redacted_too(client, upstream):
    upstream.reset()
    client.responses.create(model="gpt-test", input="ping me on +44 20 7946 0958")
    sent = json.dumps(upstream.stats()["requests"][-1]["body"])
    assert "7946" not in sent and "[REDACTED_PHONE]" in sent


def test_a_card_failing_luhn_is_not_redacted(client, upstream):
    reply = _ask(client, "gpt-test", "ticket 4111 1111 1111 1112")
    assert reply.choices[0].message.content == "echo: ticket 4111 1111 1111 1112"


@pytest.mark.parametrize(("model", "text", "kw", "code"), [
    ("gpt-failover", "my card 5555555555554444", {}, "guardrail_blocked"),
    ("gpt-failover", "key sk-proj-abcdefghijklmnopqrstuvwx", {}, "guardrail_blocked"),
    ("gpt-dead", "tell me about Project X", {}, "guardrail_blocked"),
    ("gpt-dead", "hello", {"max_tokens": 51}, "guardrail_max_tokens"),
])
def test_blocks_are_400_with_a_clear_code(client, model, text, kw, code):
    with pytest.raises(openai.BadRequestError) as info:
        _ask(client, model, text, **kw)
    assert info.value.body["code"] == code
    assert "5555" not in json.dumps(info.value.body)  # the matched text is never echoed


def test_output_checks_on_a_whole_answer_and_on_each_stream_event(client):
    reply = _ask(client, "mock-1", "reach me at bob@example.org")
    assert "bob@example.org" not in reply.choices[0].message.content
    assert "[REDACTED_EMAIL]" in reply.choices[0].message.content
    text = "".join(c.choices[0].delta.content or "" for c in _ask(client, "mock-1", "x bob@example.org", stream=True)
                   if c.choices)
    assert "reply to" in text


def test_hostile_guarded_bodies_never_give_a_5xx(server):
    for body in ({"model": "gpt-test", "messages": [{"role": "user", "content": "@" * 20000}]},
                 {"model": "gpt-test", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
                 {"model": "mock-1", "messages": [{"role": "user", "content": "x"}], "max_tokens": "lots"},
                 {"model": "gpt-test", "messages": [{"role": "user", "content": "1" * 30000}]}):
        r = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=20,
                       headers={"authorization": f"Bearer {GATEWAY_KEY}"})
        assert r.status_code < 500, r.text


def test_responses_output_is_checked_whole_and_per_stream_event(client):
    response = client.responses.create(model="mock-1", input="reach me at bob@example.org")
    assert "bob@example.org" not in response.output_text and "[REDACTED_EMAIL]" in response.output_text
    with client.responses.stream(model="mock-1", input="write to bob@example.org") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert events and "bob@example.org" not in final.output_text
    assert "[REDACTED_EMAIL]" in final.output_text


def test_messages_output_is_checked_whole_and_per_stream_event(server):
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(base_url=server.base_url, api_key=GATEWAY_KEY, max_retries=0, timeout=20)
    message = client.messages.create(model="mock-1", max_tokens=50,
                                     messages=[{"role": "user", "content": "reach me at bob@example.org"}])
    text = "".join(block.text for block in message.content if block.type == "text")
    assert "bob@example.org" not in text and "[REDACTED_EMAIL]" in text
    with client.messages.stream(model="mock-1", max_tokens=50,
                                messages=[{"role": "user", "content": "write to bob@example.org"}]) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed and "bob@example.org" not in streamed
    assert "bob@example.org" not in "".join(b.text for b in final.content if b.type == "text")


def test_a_blocked_messages_request_is_an_anthropic_400(server):
    r = httpx.post(server.base_url + "/v1/messages", timeout=20, headers={"x-api-key": GATEWAY_KEY},
                   json={"model": "gpt-failover", "max_tokens": 20,
                         "messages": [{"role": "user", "content": "card 5555555555554444"}]})
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error" and "5555" not in r.text
