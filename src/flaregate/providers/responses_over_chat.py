"""Responses API <-> chat completions, both directions, streamed and not.

Request: ``instructions`` becomes a system message; ``input`` (a string or a list of items:
messages with text/image parts, ``function_call`` and ``function_call_output``) becomes chat
messages; function ``tools``, ``tool_choice``, ``max_output_tokens``, ``text.format`` map to
their chat names. Built-in tools (web search, file search, ...) have no chat equivalent and
are left out. Answer: a ``chat.completion`` becomes a ``response`` with ``message`` and
``function_call`` output items; a chunk stream becomes the typed event sequence
(``response.created`` ... ``response.completed``) the official SDK accumulates.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from ..ports import UpstreamResponse
from .chat_chunks import ChatChunkTranslator
from .translated import TranslatedResponse

ERROR_CODES = {400: "invalid_request_error", 401: "invalid_api_key", 403: "permission_denied",
               404: "not_found", 429: "rate_limit_exceeded"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# -- request: Responses -> chat ----------------------------------------------------------------
def _part(part: Any) -> dict[str, Any] | None:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text", "refusal"):
        return {"type": "text", "text": str(part.get("text") or part.get("refusal") or "")}
    if kind == "input_image":
        url = part.get("image_url")
        if isinstance(url, dict):
            url = url.get("url")
        return {"type": "image_url", "image_url": {"url": str(url or "")}} if url else None
    return None


def _content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = [p for p in (_part(c) for c in content or [] if True) if p is not None] if isinstance(content, list) else []
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _output(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # a list of output parts
        return "".join(str(p.get("text", "")) for p in value if isinstance(p, dict))
    return json.dumps(value)


def to_chat_messages(items: Any) -> list[dict[str, Any]]:
    """Responses input items as chat messages (consecutive function calls share one turn)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message" or (kind is None and "role" in item):
            role = item.get("role") if item.get("role") in ("user", "assistant", "system") else (
                "system" if item.get("role") == "developer" else "user")
            content = _content(item.get("content"))
            if role != "user" and isinstance(content, list):  # only user turns take images
                content = "".join(p.get("text", "") for p in content)
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {"id": str(item.get("call_id") or item.get("id") or ""), "type": "function",
                    "function": {"name": str(item.get("name") or ""), "arguments": str(item.get("arguments") or "{}")}}
            last = messages[-1] if messages else None
            if last is not None and last.get("role") == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""),
                             "content": _output(item.get("output"))})
    return messages


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str) and choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": str(choice["name"])}}
    return None


def to_chat_request(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append({"role": "system", "content": body["instructions"]})
    messages.extend(to_chat_messages(history or []))
    messages.extend(to_chat_messages(body.get("input")))
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if isinstance(body.get("max_output_tokens"), int):
        out["max_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    if tools:
        out["tools"] = [{"type": "function", "function": {
            "name": str(t.get("name") or ""), "description": str(t.get("description") or ""),
            "parameters": t.get("parameters") or {"type": "object", "properties": {}},
            **({"strict": t["strict"]} if isinstance(t.get("strict"), bool) else {})}} for t in tools]
        choice = _tool_choice(body.get("tool_choice"))
        if choice is not None:
            out["tool_choice"] = choice
    text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(text_format, dict):
        if text_format.get("type") == "json_schema":
            out["response_format"] = {"type": "json_schema", "json_schema": {
                "name": text_format.get("name") or "output", "schema": text_format.get("schema") or {},
                "strict": text_format.get("strict") is True}}
        elif text_format.get("type") == "json_object":
            out["response_format"] = {"type": "json_object"}
    return out


# -- answer: chat -> Responses -----------------------------------------------------------------
def _usage(usage: Any) -> dict[str, Any]:
    usage = usage if isinstance(usage, dict) else {}
    tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {"input_tokens": tokens_in, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens_out, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out}


def message_item(text: str, item_id: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def call_item(call_id: str, name: str, arguments: str, item_id: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def envelope(response_id: str, model: str, request: Mapping[str, Any], status: str,
             output: list[dict[str, Any]], usage: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
    """The ``response`` object, echoing the request's settings as OpenAI does."""
    if status == "completed" and finish == "length":
        status = "incomplete"
    return {"id": response_id, "object": "response", "created_at": int(time.time()), "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": request.get("instructions"), "max_output_tokens": request.get("max_output_tokens"),
            "model": model, "output": output, "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": request.get("previous_response_id"), "reasoning": {"effort": None, "summary": None},
            "store": request.get("store", True), "temperature": request.get("temperature", 1.0),
            "text": request.get("text") or {"format": {"type": "text"}},
            "tool_choice": request.get("tool_choice", "auto"), "tools": request.get("tools") or [],
            "top_p": request.get("top_p", 1.0), "truncation": "disabled", "usage": usage,
            "user": request.get("user"), "metadata": request.get("metadata") or {}}


def to_response(completion: dict[str, Any], model: str, request: Mapping[str, Any], response_id: str) -> dict[str, Any]:
    choice = (completion.get("choices") or [{}])[0]
    choice = choice if isinstance(choice, dict) else {}
    reply = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    if isinstance(reply, dict) and reply.get("content"):
        output.append(message_item(str(reply["content"]), new_id("msg")))
    for call in (reply.get("tool_calls") or []) if isinstance(reply, dict) else []:
        function = call.get("function") or {} if isinstance(call, dict) else {}
        output.append(call_item(str(call.get("id") or new_id("call")), str(function.get("name") or ""),
                                str(function.get("arguments") or "{}"), new_id("fc")))
    return envelope(response_id, str(completion.get("model") or model), request, "completed", output,
                    _usage(completion.get("usage")), choice.get("finish_reason"))


def to_responses_error(status: int, payload: Any) -> dict[str, Any]:
    error = payload.get("error") if isinstance(payload, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return {"error": {"message": str(message or f"upstream answered {status}"), "type": "invalid_request_error"
                      if status < 500 else "api_error", "param": None, "code": ERROR_CODES.get(status)}}


class ChunksToEvents(ChatChunkTranslator):
    """OpenAI ``chat.completion.chunk`` SSE in, the Responses API's typed events out."""

    def __init__(self, model: str, request: Mapping[str, Any], response_id: str) -> None:
        super().__init__()
        self.model = model
        self._request = request
        self._id = response_id
        self._seq = 0
        self._items: list[dict[str, Any]] = []  # output items so far, in order
        self._text_index: int | None = None  # the open message item's output index
        self._calls: dict[int, int] = {}  # chat tool-call index -> output index
        self._finish: str | None = None
        self._completed = False

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    def _response(self, status: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        return envelope(self._id, self.model, self._request, status, self._items if status != "in_progress" else [],
                        usage, self._finish)

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self._started = True
        if chunk.get("model"):
            self.model = str(chunk["model"])
        snapshot = self._response("in_progress")
        return self._event("response.created", {"response": snapshot}) + self._event(
            "response.in_progress", {"response": snapshot})

    def _error(self, error: dict[str, Any]) -> bytes:
        return self._event("error", {"code": str(error.get("code") or "upstream_error"),
                                     "message": str(error.get("message")), "param": None})

    def _choice(self, choice: dict[str, Any]) -> bytes:
        return self._delta(choice) if choice.get("index", 0) == 0 else b""

    def _done(self) -> bytes:
        return self._complete()

    def _add(self, item: dict[str, Any]) -> bytes:
        self._items.append(item)
        return self._event("response.output_item.added", {"output_index": len(self._items) - 1, "item": item})

    def _delta(self, choice: dict[str, Any]) -> bytes:
        out = []
        delta = choice.get("delta") or {}
        if delta.get("content"):
            if self._text_index is None:
                item = message_item("", new_id("msg"), "in_progress")
                item["content"] = []
                out.append(self._add(item))
                self._text_index = len(self._items) - 1
                item["content"].append({"type": "output_text", "text": "", "annotations": []})
                out.append(self._event("response.content_part.added", {
                    "item_id": item["id"], "output_index": self._text_index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}}))
            item = self._items[self._text_index]
            item["content"][0]["text"] += str(delta["content"])
            out.append(self._event("response.output_text.delta", {
                "item_id": item["id"], "output_index": self._text_index, "content_index": 0,
                "delta": str(delta["content"]), "logprobs": []}))
        for call in delta.get("tool_calls") or []:
            if not isinstance(call, dict):
                continue
            index = call.get("index", 0)
            function = call.get("function") or {}
            if index not in self._calls:
                out.append(self._add(call_item(str(call.get("id") or new_id("call")), str(function.get("name") or ""),
                                               "", new_id("fc"), "in_progress")))
                self._calls[index] = len(self._items) - 1
            position = self._calls[index]
            if function.get("arguments"):
                self._items[position]["arguments"] += str(function["arguments"])
                out.append(self._event("response.function_call_arguments.delta", {
                    "item_id": self._items[position]["id"], "output_index": position,
                    "delta": str(function["arguments"])}))
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
        return b"".join(out)

    def _complete(self) -> bytes:
        if self._completed:
            return b""
        self._completed = True
        out = [b"" if self._started else self._start({})]
        for position, item in enumerate(self._items):
            item["status"] = "completed"
            if item["type"] == "message":
                part = item["content"][0]
                common = {"item_id": item["id"], "output_index": position, "content_index": 0}
                out.append(self._event("response.output_text.done", {**common, "text": part["text"], "logprobs": []}))
                out.append(self._event("response.content_part.done", {**common, "part": part}))
            else:
                out.append(self._event("response.function_call_arguments.done", {
                    "item_id": item["id"], "output_index": position, "arguments": item["arguments"]}))
            out.append(self._event("response.output_item.done", {"output_index": position, "item": item}))
        final = self._response("completed", _usage(self._usage))
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        out.append(self._event(kind, {"response": final}))
        return b"".join(out)


class ResponsesAnswer(TranslatedResponse):
    """A chat provider's response read as a Responses API one."""

    def __init__(self, response: UpstreamResponse, model: str, request: Mapping[str, Any]) -> None:
        super().__init__(response, model, request.get("stream") is True)
        self._request = request
        self._id = new_id("resp")

    def stream_translator(self) -> ChunksToEvents:
        return ChunksToEvents(self._model, self._request, self._id)

    def translate(self, parsed: dict[str, Any]) -> dict[str, Any]:
        if self.status == 200:
            return to_response(parsed, self._model, self._request, self._id)
        return to_responses_error(self.status, parsed)


HISTORY_KEY = "_flaregate_history"  # set by the endpoint: the stored turns, in Responses item form


async def responses_over_chat(provider: Any, body: dict[str, Any], model: str, forward_headers: Mapping[str, str],
                              *, timeout: float | None = None) -> UpstreamResponse:
    history = body.get(HISTORY_KEY) or []
    response = await provider.chat(to_chat_request(body, history), model, forward_headers, timeout=timeout)
    return ResponsesAnswer(response, model, body)


def _passthrough_body(body: dict[str, Any]) -> dict[str, Any]:
    """The client's body for a provider that serves Responses itself: stored turns the
    gateway holds go in front of the input (the provider never saw that response id)."""
    history = body.get(HISTORY_KEY)
    out = {k: v for k, v in body.items() if k != HISTORY_KEY}
    if history:
        current = body.get("input")
        current = [{"role": "user", "content": current}] if isinstance(current, str) else list(current or [])
        out["input"] = [*history, *current]
    return out


def responses_sender(provider: Any, operations: Any) -> Any:
    """How one provider answers ``/v1/responses``: natively, over chat, or not at all."""
    if "responses" in operations:
        async def native(body: dict[str, Any], model: str, forward: Mapping[str, str], *,
                         timeout: float | None = None) -> UpstreamResponse:
            return await provider.responses(_passthrough_body(body), model, forward, timeout=timeout)
        return native
    if "chat" in operations:
        async def over_chat(body: dict[str, Any], model: str, forward: Mapping[str, str], *,
                            timeout: float | None = None) -> UpstreamResponse:
            return await responses_over_chat(provider, body, model, forward, timeout=timeout)
        return over_chat
    return None
