"""Anthropic Messages clients served by any chat provider: the other direction of translation.

``POST /v1/messages`` goes natively to ``anthropic`` providers; for every other provider the
Messages body is translated to an OpenAI chat body, sent with the provider's ``chat``, and
the answer translated back: a ``chat.completion`` becomes a ``message``, and streamed chunks
become Anthropic's event sequence (``message_start``, ``content_block_*``, ``message_delta``,
``message_stop``), text as ``text_delta`` and tool-call arguments as ``input_json_delta``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..ports import UpstreamResponse
from .chat_chunks import ChatChunkTranslator
from .translated import TranslatedResponse

FINISH_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                  "content_filter": "refusal"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 429: "rate_limit_error"}


# -- request: Anthropic -> OpenAI --------------------------------------------------------------
def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    else:
        url = source.get("url", "")
    return {"type": "image_url", "image_url": {"url": url}}


def _turn(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One Anthropic turn as OpenAI messages (tool results become ``tool`` messages)."""
    role, content = message.get("role"), message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks = [b for b in content or [] if isinstance(b, dict)]
    out: list[dict[str, Any]] = []
    for block in blocks:
        if block.get("type") == "tool_result":
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""),
                        "content": _text(block.get("content"))})
    if role == "assistant":
        reply: dict[str, Any] = {"role": "assistant", "content": _text(blocks) or None}
        calls = [{"id": b.get("id", ""), "type": "function",
                  "function": {"name": b.get("name", ""), "arguments": json.dumps(b.get("input") or {})}}
                 for b in blocks if b.get("type") == "tool_use"]
        if calls:
            reply["tool_calls"] = calls
        return [reply]
    parts = [{"type": "text", "text": b.get("text", "")} if b.get("type") == "text" else _image_part(b)
             for b in blocks if b.get("type") in ("text", "image")]
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts})
    return out


def to_chat_request(body: dict[str, Any]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text(body["system"])})
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            messages.extend(_turn(message))
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages, "max_tokens": body.get("max_tokens")}
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and "input_schema" in t]
    if tools:
        out["tools"] = [{"type": "function", "function": {"name": t.get("name", ""), "description": t.get(
            "description", ""), "parameters": t.get("input_schema")}} for t in tools]
        choice = body.get("tool_choice") or {}
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind == "any":
            out["tool_choice"] = "required"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
        if isinstance(choice, dict) and choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id") if isinstance(body.get("metadata"), dict) else None
    if user:
        out["user"] = user
    return out


# -- response: OpenAI -> Anthropic -------------------------------------------------------------
def _usage(usage: Any) -> dict[str, int]:
    usage = usage if isinstance(usage, dict) else {}
    return {"input_tokens": int(usage.get("prompt_tokens") or 0), "output_tokens": int(usage.get("completion_tokens") or 0)}


def _tool_input(arguments: Any) -> Any:
    try:
        parsed = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def to_message(completion: dict[str, Any], model: str) -> dict[str, Any]:
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if reply.get("content"):
        content.append({"type": "text", "text": reply["content"]})
    for call in reply.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""),
                        "input": _tool_input(function.get("arguments"))})
    return {"id": completion.get("id", "msg"), "type": "message", "role": "assistant",
            "model": completion.get("model") or model, "content": content,
            "stop_reason": FINISH_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
            "stop_sequence": None, "usage": _usage(completion.get("usage"))}


def to_anthropic_error(status: int, payload: Any) -> dict[str, Any]:
    error = payload.get("error") if isinstance(payload, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"),
                                       "message": str(message or f"upstream answered {status}")}}


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + json.dumps({"type": kind, **data}, separators=(",", ":")).encode() + b"\n\n"


class ChunksToEvents(ChatChunkTranslator):
    """OpenAI ``chat.completion.chunk`` SSE in, Anthropic stream events out."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model
        self._block: int = -1  # the open content block's index (-1: none)
        self._block_kind: str | None = None
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool call index -> block index
        self._finish: str | None = None
        self._stopped = False

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self._started = True
        message = {"id": chunk.get("id", "msg"), "type": "message", "role": "assistant",
                   "model": chunk.get("model") or self.model, "content": [], "stop_reason": None,
                   "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        return _event("message_start", {"message": message})

    def _close_block(self) -> bytes:
        if self._block < 0 or self._block_kind is None:
            return b""
        self._block_kind = None
        return _event("content_block_stop", {"index": self._block})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block += 1
        self._block_kind = kind
        return out + _event("content_block_start", {"index": self._block, "content_block": block})

    def _error(self, error: dict[str, Any]) -> bytes:
        return _event("error", {"error": {"type": "api_error", "message": str(error.get("message"))}})

    def _choice(self, choice: dict[str, Any]) -> bytes:
        return self._delta(choice)

    def _done(self) -> bytes:
        return self._stop()

    def _delta(self, choice: dict[str, Any]) -> bytes:
        out = []
        delta = choice.get("delta") or {}
        if delta.get("content"):
            if self._block_kind != "text":
                out.append(self._open("text", {"type": "text", "text": ""}))
            out.append(_event("content_block_delta", {"index": self._block,
                                                      "delta": {"type": "text_delta", "text": delta["content"]}}))
        for call in delta.get("tool_calls") or []:
            index = call.get("index", 0)
            function = call.get("function") or {}
            if index not in self._tool_blocks:
                out.append(self._open("tool_use", {"type": "tool_use", "id": call.get("id", ""),
                                                   "name": function.get("name", ""), "input": {}}))
                self._tool_blocks[index] = self._block
            if function.get("arguments"):
                out.append(_event("content_block_delta", {"index": self._tool_blocks[index], "delta": {
                    "type": "input_json_delta", "partial_json": function["arguments"]}}))
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
        return b"".join(out)

    def _stop(self) -> bytes:
        if self._stopped:
            return b""
        self._stopped = True
        out = [self._start({}) if not self._started else b"", self._close_block()]
        out.append(_event("message_delta", {"delta": {"stop_reason": FINISH_REASONS.get(self._finish or "stop",
                                                                                      "end_turn"),
                                                      "stop_sequence": None},
                                            "usage": {"output_tokens": _usage(self._usage)["output_tokens"]}}))
        out.append(_event("message_stop", {}))
        return b"".join(out)


class MessagesResponse(TranslatedResponse):
    """A chat provider's response read as an Anthropic Messages one."""

    def stream_translator(self) -> ChunksToEvents:
        return ChunksToEvents(self._model)

    def translate(self, parsed: dict[str, Any]) -> dict[str, Any]:
        return to_message(parsed, self._model) if self.status == 200 else to_anthropic_error(self.status, parsed)


async def messages_over_chat(provider: Any, body: dict[str, Any], model: str, forward_headers: Mapping[str, str],
                             *, timeout: float | None = None) -> UpstreamResponse:
    response = await provider.chat(to_chat_request(body), model, forward_headers, timeout=timeout)
    return MessagesResponse(response, model, body.get("stream") is True)
