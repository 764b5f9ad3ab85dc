"""OpenAI chat completions <-> Anthropic Messages, as pure functions (no I/O).

Requests go OpenAI -> Anthropic: system and developer messages become ``system``, tool
calls become ``tool_use`` blocks, tool messages ``tool_result`` blocks, tools and
``tool_choice`` their Anthropic forms, consecutive same-role messages merge (Anthropic
wants alternating turns). Responses come back Anthropic -> OpenAI: a message becomes a
``chat.completion``; streamed events become ``chat.completion.chunk`` SSE, text deltas as
``content`` and ``input_json_delta`` as tool-call ``arguments`` deltas.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..ports import MAX_EVENT_BYTES_CEILING
from ..sse_buffer import EventBuffer, parse_event, split_events

DEFAULT_MAX_TOKENS = 4096
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                "pause_turn": "stop", "refusal": "content_filter"}
ERROR_TYPES = {"invalid_request_error": "invalid_request_error", "authentication_error": "authentication_error",
               "permission_error": "permission_error", "not_found_error": "invalid_request_error",
               "rate_limit_error": "rate_limit_error", "overloaded_error": "server_error", "api_error": "server_error"}


# -- request: OpenAI -> Anthropic --------------------------------------------------------------
def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    url = (part.get("image_url") or {}).get("url", "") if isinstance(part.get("image_url"), dict) else ""
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            blocks.append(_image_block(part))
    return blocks


def _arguments(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {"_raw": raw}
    return parsed if isinstance(parsed, dict) else {"_value": parsed}


def _message_blocks(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "tool":
        result = {"type": "tool_result", "tool_use_id": message.get("tool_call_id", ""),
                  "content": _text_of(message.get("content"))}
        return "user", [result]
    if role == "assistant":
        blocks = _content_blocks(message.get("content"))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            blocks.append({"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""),
                           "input": _arguments(function.get("arguments"))})
        return "assistant", blocks
    return "user", _content_blocks(message.get("content"))


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    if isinstance(choice, dict):
        result: dict[str, Any] = {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    else:
        result = {"type": {"required": "any", "none": "none"}.get(choice, "auto")}
    if parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def to_anthropic_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        if message.get("role") in ("system", "developer"):
            system.append(_text_of(message.get("content")))
            continue
        role, blocks = _message_blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # Anthropic wants user/assistant turns to alternate
        else:
            turns.append({"role": role, "content": blocks})
    out: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    for name in ("temperature", "top_p", "top_k", "stream"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = [t.get("function") or {} for t in body.get("tools") or [] if isinstance(t, dict)]
    if tools:
        out["tools"] = [{"name": f.get("name", ""), "description": f.get("description", ""),
                         "input_schema": f.get("parameters") or {"type": "object", "properties": {}}} for f in tools]
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    return out


# -- response: Anthropic -> OpenAI -------------------------------------------------------------
def _usage(usage: dict[str, Any]) -> dict[str, int]:
    prompt = int(usage.get("input_tokens") or 0) + int(usage.get("cache_read_input_tokens") or 0) \
        + int(usage.get("cache_creation_input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def to_openai_completion(message: dict[str, Any], model: str, created: int | None = None) -> dict[str, Any]:
    text = "".join(b.get("text", "") for b in message.get("content") or [] if b.get("type") == "text")
    tool_calls = [{"id": b.get("id", ""), "type": "function",
                   "function": {"name": b.get("name", ""), "arguments": json.dumps(b.get("input") or {})}}
                  for b in message.get("content") or [] if b.get("type") == "tool_use"]
    reply: dict[str, Any] = {"role": "assistant", "content": text or (None if tool_calls else "")}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    return {
        "id": message.get("id", "msg"),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": message.get("model") or model,
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": STOP_REASONS.get(message.get("stop_reason") or "", "stop")}],
        "usage": _usage(message.get("usage") or {}),
    }


def to_openai_error(payload: Any) -> dict[str, Any]:
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {}
    return {"error": {"message": str(error.get("message") or "Anthropic error"),
                      "type": ERROR_TYPES.get(str(error.get("type")), "server_error"), "code": error.get("type"),
                      "param": None}}


class SseParser:
    """Incremental SSE parser: feed bytes, get (event name, data text) for complete events.

    Linear in the bytes fed, holding at most one partial event of ``max_event_bytes``
    (past it: UpstreamEventTooLarge). The default is the configurable cap's ceiling: the
    streams parsed here passed the configured cap first (the upstream caller's, or a
    translated response's own ``EventBounds``)."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES_CEILING) -> None:
        self._buffer = EventBuffer(max_event_bytes)

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        region = self._buffer.feed(chunk)
        if not region:
            return []
        events = []
        for raw in split_events(region):
            name, data = parse_event(raw)
            if data or name:
                events.append((name, data))
        return events


class StreamTranslator:
    """Anthropic stream events in, OpenAI ``chat.completion.chunk`` SSE bytes out."""

    def __init__(self, model: str, include_usage: bool, created: int | None = None) -> None:
        self.model = model
        self.include_usage = include_usage
        self.created = created if created is not None else int(time.time())
        self.id = "msg"
        self.usage: dict[str, Any] = {}
        self.finished = False
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._parser = SseParser()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        event = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
        return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for name, data in self._parser.feed(chunk):
            try:
                event = json.loads(data) if data else {}
            except ValueError:
                event = {"type": "error", "error": {"type": "api_error", "message": "malformed event from Anthropic"}}
            out.append(self._translate(event.get("type") or name or "", event))
        return b"".join(out)

    def _translate(self, kind: str, event: dict[str, Any]) -> bytes:
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = message.get("id", self.id)
            self.model = message.get("model") or self.model
            self.usage.update(message.get("usage") or {})
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index.setdefault(event.get("index", 0), len(self._tool_index))
                call = {"index": index, "id": block.get("id", ""), "type": "function",
                        "function": {"name": block.get("name", ""), "arguments": ""}}
                return self._chunk({"tool_calls": [call]})
            if block.get("type") == "text" and block.get("text"):
                return self._chunk({"content": block["text"]})
            return b""
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if delta.get("type") == "input_json_delta":
                index = self._tool_index.get(event.get("index", 0), 0)
                return self._chunk({"tool_calls": [{"index": index,
                                                    "function": {"arguments": delta.get("partial_json", "")}}]})
            return b""
        if kind == "message_delta":
            self.usage.update(event.get("usage") or {})
            reason = (event.get("delta") or {}).get("stop_reason")
            return self._chunk({}, STOP_REASONS.get(reason or "", "stop"))
        if kind == "message_stop":
            self.finished = True
            tail = self._chunk({}, None, usage=_usage(self.usage)) if self.include_usage else b""
            if self.include_usage:  # the usage chunk has no choices, as OpenAI sends it
                event = json.loads(tail[6:])
                event["choices"] = []
                tail = b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
            return tail + b"data: [DONE]\n\n"
        if kind == "error":
            return b"data: " + json.dumps(to_openai_error(event), separators=(",", ":")).encode() + b"\n\n"
        return b""  # ping, content_block_stop, unknown events
