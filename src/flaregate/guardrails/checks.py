"""Guardrails applied to one request body (before the provider) and one answer (after).

Input: the max_tokens cap, deny-lists (always a block), then PII (``redact``: replaced in
the body itself, so the provider and the cache key only ever see the redacted text;
``block``: a 400 ``guardrail_blocked``). Output: PII in the answer's text is redacted or,
with ``block``, the answer is refused with the same 400. Each verdict goes into the
analytics event under ``guardrails`` and the log, with kinds and counts, never the text.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from ..errors import GatewayError
from ..ports import MAX_EVENT_BYTES_CEILING, UpstreamEventTooLarge
from ..request_event import RequestEvent
from ..sse_buffer import EventBuffer, split_events
from .pii import redact
from .policy import GuardrailPolicy, GuardrailSettings

log = logging.getLogger("flaregate.guardrails")

# The stream guards hold one partial event at most: the ceiling of the configurable cap, as
# the streams they see were held to the configured one already (by the upstream caller).
MAX_EVENT_BYTES = MAX_EVENT_BYTES_CEILING
# Tool definitions too: a description is text the model reads (a poisoned one carries instructions).
_TEXT_FIELDS = ("messages", "input", "instructions", "system", "prompt", "tools")
_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


class _Compiled:
    def __init__(self, name: str, policy: GuardrailPolicy) -> None:
        self.name = name
        self.policy = policy
        words = [re.escape(w) for w in policy.deny_words if w.strip()]
        self.words = re.compile(r"(?i)(?<!\w)(?:" + "|".join(words) + r")(?!\w)") if words else None
        self.patterns = [re.compile(p) for p in policy.deny_patterns]


def _walk(value: Any, change: Any) -> Any:
    """Every string inside ``value`` passed through ``change`` (dict keys left alone)."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_walk(v, change) for v in value]
    if isinstance(value, dict):
        return {k: (v if k in ("type", "role", "id", "call_id", "tool_call_id", "name") else _walk(v, change))
                for k, v in value.items()}
    return value


def blocked(name: str, check: str, stage: str) -> GatewayError:
    where = "request" if stage == "input" else "answer"
    return GatewayError(400, f"The {where} was blocked by guardrail policy '{name}' ({check}).",
                        param=check, code="guardrail_blocked")


class Guardrails:
    def __init__(self, settings: GuardrailSettings) -> None:
        self._settings = settings
        self._compiled = {name: _Compiled(name, p) for name, p in settings.policies.items()}

    def policy_for(self, route: str | None, key_id: str, key_name: str = "") -> _Compiled | None:
        s = self._settings
        name = s.keys.get(key_id) or (s.keys.get(key_name) if key_name else None) or (
            s.routes.get(route) if route else None) or s.default
        return self._compiled.get(name) if name else None

    @staticmethod
    def _verdict(event: RequestEvent, policy: _Compiled, stage: str, check: str, action: str,
                 counts: dict[str, int] | None = None) -> None:
        verdict: dict[str, Any] = {"policy": policy.name, "stage": stage, "check": check, "action": action}
        if counts:
            verdict["kinds"] = counts
        event.setdefault("guardrails", []).append(verdict)
        log.info("guardrail %s: %s %s %s %s request=%s", policy.name, stage, check, action,
                 counts or "", event.get("request_id"))

    def check_input(self, policy: _Compiled | None, body: dict[str, Any], event: RequestEvent) -> None:
        """Enforce ``policy`` on ``body`` in place (redaction) or raise a 400 (block)."""
        if policy is None:
            return
        p = policy.policy
        if p.max_tokens is not None:
            for field in _TOKEN_FIELDS:
                value = body.get(field)
                if isinstance(value, int) and not isinstance(value, bool) and value > p.max_tokens:
                    self._verdict(event, policy, "input", "max_tokens", "block")
                    raise GatewayError(400, f"{field} {value} is above this route's limit of {p.max_tokens}.",
                                       param=field, code="guardrail_max_tokens")
        if policy.words is not None or policy.patterns:
            text = json.dumps([body.get(f) for f in _TEXT_FIELDS], ensure_ascii=False)
            if (policy.words is not None and policy.words.search(text)) or any(r.search(text)
                                                                               for r in policy.patterns):
                self._verdict(event, policy, "input", "deny_list", "block")
                raise blocked(policy.name, "deny_list", "input")
        if p.pii and p.input:
            found: dict[str, int] = {}
            for field in _TEXT_FIELDS:
                if field in body:
                    body[field] = _walk(body[field], lambda s: redact(s, p.pii, found))
            if found:
                self._verdict(event, policy, "input", "pii", p.action, found)
                if p.action == "block":
                    raise blocked(policy.name, "pii", "input")

    def check_output_text(self, policy: _Compiled | None, text: str, event: RequestEvent) -> str:
        """One answer text (a whole answer, or one whole stream event's text)."""
        if policy is None or not policy.policy.output or not policy.policy.pii or not text:
            return text
        found: dict[str, int] = {}
        out = redact(text, policy.policy.pii, found)
        if found:
            self._verdict(event, policy, "output", "pii", policy.policy.action, found)
            if policy.policy.action == "block":
                raise blocked(policy.name, "pii", "output")
        return out

    def check_chat_answer(self, policy: _Compiled | None, payload: bytes, event: RequestEvent) -> bytes:
        """A non-streamed OpenAI chat completion with its message texts checked."""
        if policy is None or not policy.policy.output or not policy.policy.pii:
            return payload
        try:
            answer = json.loads(payload)
        except ValueError:
            return payload
        changed = False
        for choice in answer.get("choices") or [] if isinstance(answer, dict) else []:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                new = self.check_output_text(policy, message["content"], event)
                changed |= new != message["content"]
                message["content"] = new
        return json.dumps(answer, separators=(",", ":")).encode() if changed else payload


def _error_event(error: GatewayError) -> bytes:
    body = {"error": {"message": error.message, "type": error.type, "code": error.code,
                      "param": error.param}}
    return b"data: " + json.dumps(body).encode() + b"\n\ndata: [DONE]\n\n"


def _too_large(exc: UpstreamEventTooLarge) -> GatewayError:
    """An event this guard cannot hold to check: the stream ends (never passed unchecked)."""
    return GatewayError(502, f"The upstream stream was interrupted: {exc}", type="api_error", code=exc.code)


async def guard_chat_stream(guard: Guardrails, policy: _Compiled, chunks: Any, event: RequestEvent) -> Any:
    """A chat SSE stream checked one whole event at a time (a match split across two
    deltas is not seen: the documented limit of per-event checks). Linear in the bytes,
    one partial event held (within the event cap's ceiling: the upstream caller held the
    stream to the configured cap already)."""
    events = EventBuffer(MAX_EVENT_BYTES)
    async for chunk in chunks:
        try:
            region = events.feed(chunk)
        except UpstreamEventTooLarge as exc:
            yield _error_event(_too_large(exc))
            return
        if not region:
            continue
        out: list[bytes] = []
        for raw in split_events(region):
            if raw.startswith(b"data: {"):
                try:
                    data = json.loads(raw[6:])
                    for choice in data.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if isinstance(delta.get("content"), str):
                            delta["content"] = guard.check_output_text(policy, delta["content"], event)
                    raw = b"data: " + json.dumps(data, separators=(",", ":")).encode()
                except GatewayError as exc:
                    out.append(_error_event(exc))
                    yield b"".join(out)
                    return
                except (ValueError, AttributeError):
                    pass
            out.append(raw + b"\n\n")
        yield b"".join(out)
    rest = events.rest()
    if rest:
        yield rest


_ANSWER_TEXT_KEYS = frozenset({"text", "delta"})  # Responses API: output_text parts and their deltas


def _answer_texts(guard: Guardrails, policy: _Compiled, value: Any, event: RequestEvent) -> Any:
    if isinstance(value, list):
        return [_answer_texts(guard, policy, v, event) for v in value]
    if isinstance(value, dict):
        return {k: guard.check_output_text(policy, v, event) if k in _ANSWER_TEXT_KEYS and isinstance(v, str)
                else _answer_texts(guard, policy, v, event) for k, v in value.items()}
    return value


def check_answer_texts(guard: Guardrails, policy: _Compiled | None, payload: bytes, event: RequestEvent,
                       field: str) -> bytes:
    """A non-streamed answer with the texts under ``field`` checked: ``output`` of a
    Responses answer, ``content`` of an Anthropic message."""
    if policy is None or not policy.policy.output or not policy.policy.pii:
        return payload
    try:
        answer = json.loads(payload)
    except ValueError:
        return payload
    if not isinstance(answer, dict) or not isinstance(answer.get(field), list):
        return payload
    answer[field] = _answer_texts(guard, policy, answer[field], event)
    return json.dumps(answer, separators=(",", ":")).encode()


def responses_error_event(error: GatewayError) -> bytes:
    body = {"type": "error", "code": error.code, "message": error.message, "param": error.param}
    return b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"


def anthropic_error_event(error: GatewayError) -> bytes:
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": error.message}}
    return b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"


async def guard_typed_stream(guard: Guardrails, policy: _Compiled, chunks: Any, event: RequestEvent,
                             error_event: Callable[[GatewayError], bytes] = responses_error_event) -> Any:
    """A typed-event SSE stream (Responses API, Anthropic messages) checked one whole event
    at a time (deltas, done texts and final objects alike); a block ends the stream with
    ``error_event``. Linear and bounded as ``guard_chat_stream``."""
    events = EventBuffer(MAX_EVENT_BYTES)
    async for chunk in chunks:
        try:
            region = events.feed(chunk)
        except UpstreamEventTooLarge as exc:
            yield error_event(_too_large(exc))
            return
        if not region:
            continue
        out: list[bytes] = []
        for raw in split_events(region):
            head, sep, data = raw.partition(b"data: ")
            if sep and data.startswith(b"{"):
                try:
                    parsed = _answer_texts(guard, policy, json.loads(data), event)
                    raw = head + b"data: " + json.dumps(parsed, separators=(",", ":")).encode()
                except GatewayError as exc:
                    out.append(error_event(exc))
                    yield b"".join(out)
                    return
                except ValueError:
                    pass
            out.append(raw + b"\n\n")
        yield b"".join(out)
    rest = events.rest()
    if rest:
        yield rest
