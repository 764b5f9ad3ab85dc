"""Policies applied to bodies: redaction in place, blocks as 400s, verdicts without the text."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from flaregate.errors import GatewayError
from flaregate.guardrails import Guardrails, GuardrailSettings

SETTINGS = GuardrailSettings.model_validate({
    "policies": {"redact": {"pii": ["all"]}, "block": {"pii": ["card"], "action": "block"},
                 "deny": {"deny_words": ["project x"], "deny_patterns": ["(?i)drop\\s+table"], "max_tokens": 100}},
    "routes": {"gpt": "redact", "strict": "block", "deny-route": "deny"}, "keys": {"k-deny": "deny"}})


def _apply(route: str, body: dict, key: str = "k1") -> tuple[dict, dict]:
    guard = Guardrails(SETTINGS)
    event: dict = {}
    guard.check_input(guard.policy_for(route, key), body, event)
    return body, event


def test_redact_rewrites_every_text_field_and_records_counts_only():
    body = {"model": "gpt", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "mail a@b.io card 4111111111111111"}]}], "instructions": "ip 10.0.0.1"}
    body, event = _apply("gpt", body)
    assert body["messages"][0]["content"][0]["text"] == "mail [REDACTED_EMAIL] card [REDACTED_CARD]"
    assert body["instructions"] == "ip [REDACTED_IP]"
    assert event["guardrails"] == [{"policy": "redact", "stage": "input", "check": "pii", "action": "redact",
                                    "kinds": {"email": 1, "card": 1, "ip": 1}}]
    assert "a@b.io" not in json.dumps(event)


def test_block_is_a_400_with_its_code():
    with pytest.raises(GatewayError) as info:
        _apply("strict", {"messages": [{"role": "user", "content": "4111 1111 1111 1111"}]})
    assert info.value.status == 400 and info.value.code == "guardrail_blocked"


@pytest.mark.parametrize("body", [{"input": "about Project X"}, {"messages": [{"content": "DROP  TABLE users"}]},
                                  {"max_tokens": 101, "messages": []}])
def test_deny_lists_and_max_tokens_block_by_route_and_by_key(body):
    for route, key in (("deny-route", "k1"), ("gpt-other", "k-deny")):
        with pytest.raises(GatewayError) as info:
            _apply(route, json.loads(json.dumps(body)), key)
        assert info.value.status == 400 and info.value.code in ("guardrail_blocked", "guardrail_max_tokens")


def test_tool_descriptions_are_checked_like_messages():
    """A tool's description is text the model reads: a deny word or PII there counts too."""
    tool = {"type": "function", "function": {"name": "lookup", "description": "then ask about project x",
                                             "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(GatewayError) as info:
        _apply("deny-route", {"messages": [{"role": "user", "content": "hi"}], "tools": [tool]})
    assert info.value.code == "guardrail_blocked"
    mail = {"type": "function", "function": {"name": "send", "description": "cc boss@corp.example always"}}
    body, event = _apply("gpt", {"messages": [{"role": "user", "content": "hi"}], "tools": [mail]})
    assert body["tools"][0]["function"]["description"] == "cc [REDACTED_EMAIL] always"
    assert body["tools"][0]["function"]["name"] == "send" and body["tools"][0]["type"] == "function"


def test_no_policy_leaves_the_body_alone():
    body = {"messages": [{"content": "a@b.io"}]}
    assert _apply("unguarded", body)[0] == {"messages": [{"content": "a@b.io"}]}


@pytest.mark.parametrize("spec", [{"policies": {"p": {"pii": ["dna"]}}}, {"policies": {"p": {"deny_patterns": ["("]}}},
                                  {"routes": {"gpt": "missing"}}, {"policies": {"p": {"action": "shout"}}}])
def test_bad_settings_fail_at_start_naming_the_field(spec):
    with pytest.raises(ValidationError):
        GuardrailSettings.model_validate(spec)


def test_anthropic_answers_are_checked_whole_and_blocked_streams_end_in_an_anthropic_error():
    import asyncio

    from flaregate.guardrails.checks import (
        anthropic_error_event,
        check_answer_texts,
        guard_typed_stream,
    )

    guard = Guardrails(SETTINGS)
    answer = {"type": "message", "content": [{"type": "text", "text": "mail a@b.io"},
                                             {"type": "tool_use", "input": {"q": "x"}}]}
    event: dict = {}
    out = json.loads(check_answer_texts(guard, guard.policy_for("gpt", "k1"), json.dumps(answer).encode(), event,
                                        "content"))
    assert out["content"][0]["text"] == "mail [REDACTED_EMAIL]" and out["content"][1] == answer["content"][1]

    async def chunks():
        yield b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        yield b'"delta":{"type":"text_delta","text":"4111 1111 1111 1111"}}\n\n'
        yield b'event: message_stop\ndata: {"type":"message_stop"}\n\n'

    async def run() -> list[bytes]:
        policy = guard.policy_for("strict", "k1")
        return [c async for c in guard_typed_stream(guard, policy, chunks(), {}, anthropic_error_event)]

    parts = asyncio.run(run())
    assert len(parts) == 1 and parts[0].startswith(b"event: error\n")
    error = json.loads(parts[0].split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert b"4111" not in parts[0]
