"""Cloudflare Workers AI: the ``AI`` binding on the edge, the REST endpoint elsewhere.

Both run ``{"messages", "stream", ...}`` against a model (``@cf/meta/llama-3.1-8b-instruct``)
and answer ``{"response": text, "tool_calls"?, "usage"?}`` (REST wraps it in
``{"result": ..., "success": true}``), or, streaming, SSE events ``data: {"response": piece}``
ending in ``data: [DONE]``. This adapter turns both into OpenAI shapes.

REST: ``POST {base_url}/accounts/{account_id}/ai/run/{model}`` with ``Authorization: Bearer``
(an API token with Workers AI permission); ``base_url`` defaults to
``https://api.cloudflare.com/client/v4``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ..errors import bad_request
from ..ports import (
    DEFAULT_LIMITS,
    AiBinding,
    UpstreamError,
    UpstreamLimits,
    UpstreamResponse,
    UpstreamTransport,
)
from .anthropic_translate import SseParser
from .base import CHAT
from .translated import TranslatedResponse, read_limited

# Fields Workers AI text generation accepts, beside messages and stream.
_PASSED = ("max_tokens", "temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty",
           "tools", "response_format")


# A Workers AI model name: ``@cf/meta/llama-3.1-8b-instruct``, ``@hf/thebloke/...``: path
# segments of letters, digits, ``.``, ``_``, ``-``, ``:`` (never ``.`` or ``..`` alone).
# On a wildcard route the name is the client's, and it becomes part of a URL that carries the
# operator's API token: anything else could walk to other Cloudflare API paths.
_MODEL_SEGMENT = re.compile(r"[A-Za-z0-9_:@][A-Za-z0-9._:@-]{0,127}")


def check_model_name(model: str) -> str:
    """``model`` when it is a plain Workers AI model name, else a 400 (never a URL fragment)."""
    segments = model.split("/") if isinstance(model, str) and 0 < len(model) <= 256 else [""]
    if not all(_MODEL_SEGMENT.fullmatch(s) for s in segments):
        raise bad_request("Not a Workers AI model name (expected e.g. '@cf/meta/llama-3.1-8b-instruct').",
                          param="model", code="invalid_model")
    return model


def to_workers_ai_inputs(body: dict[str, Any]) -> dict[str, Any]:
    inputs: dict[str, Any] = {"messages": [
        {"role": m.get("role"), "content": m.get("content") if isinstance(m.get("content"), str)
         else "".join(p.get("text", "") for p in m.get("content") or [] if isinstance(p, dict))}
        for m in body.get("messages") or []
    ]}
    if body.get("stream") is True:
        inputs["stream"] = True
    if body.get("max_completion_tokens"):
        inputs["max_tokens"] = body["max_completion_tokens"]
    for name in _PASSED:
        if body.get(name) is not None and name not in inputs:
            inputs[name] = body[name]
    return inputs


def _usage(usage: Any) -> dict[str, int]:
    usage = usage if isinstance(usage, dict) else {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def to_openai_completion(result: dict[str, Any], model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.get("response")}
    calls = result.get("tool_calls") or []
    if calls:
        message["tool_calls"] = [
            {"id": c.get("id") or f"call_{i}", "type": "function",
             "function": {"name": c.get("name", ""), "arguments": c.get("arguments") if isinstance(
                 c.get("arguments"), str) else json.dumps(c.get("arguments") or {})}}
            for i, c in enumerate(calls)]
    content = message["content"]
    if not isinstance(content, str):  # some models answer JSON objects (response_format)
        message["content"] = json.dumps(content) if content is not None else None
    return {"id": f"chatcmpl-wai-{int(time.time() * 1000)}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "logprobs": None,
                                         "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": _usage(result.get("usage"))}


class _StreamTranslator:
    def __init__(self, model: str, include_usage: bool) -> None:
        self._model = model
        self._include_usage = include_usage
        self._id = f"chatcmpl-wai-{int(time.time() * 1000)}"
        self._created = int(time.time())
        self._parser = SseParser()
        self._started = False
        self._usage: Any = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        event = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for _, data in self._parser.feed(chunk):
            if data.strip() == "[DONE]":
                out.append(self._chunk({}, "stop"))
                if self._include_usage:
                    usage = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                             "model": self._model, "choices": [], "usage": _usage(self._usage)}
                    out.append(b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n")
                out.append(b"data: [DONE]\n\n")
                continue
            try:
                event = json.loads(data)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            if event.get("usage"):
                self._usage = event["usage"]
            piece = event.get("response")
            if not self._started:
                self._started = True
                out.append(self._chunk({"role": "assistant", "content": piece or ""}))
            elif piece:
                out.append(self._chunk({"content": piece}))
        return b"".join(out)


class OpenAIFromWorkersAi(TranslatedResponse):
    """A Workers AI response (REST or binding) read as an OpenAI one."""

    def __init__(self, response: UpstreamResponse, model: str, stream: bool, include_usage: bool) -> None:
        super().__init__(response, model, stream)
        self._include_usage = include_usage

    def stream_translator(self) -> _StreamTranslator:
        return _StreamTranslator(self._model, self._include_usage)

    def translate(self, parsed: dict[str, Any]) -> dict[str, Any]:
        if self.status != 200:
            errors = parsed.get("errors") or [{}]
            message = errors[0].get("message") if isinstance(errors[0], dict) else str(errors[0])
            return {"error": {"message": message or "Workers AI error", "type": "server_error",
                              "code": None, "param": None}}
        result = parsed.get("result", parsed)  # REST wraps the answer, the binding does not
        return to_openai_completion(result if isinstance(result, dict) else {}, self._model)


class _BindingResult:
    """What ``env.AI.run`` returned (an answer, or a stream of SSE bytes) as an upstream response."""

    def __init__(self, result: Any) -> None:
        self.status = 200
        self.headers: dict[str, str] = {}
        self._result = result
        self._limits = DEFAULT_LIMITS

    def limit(self, limits: UpstreamLimits) -> None:
        self._limits = limits

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if isinstance(self._result, dict) or not hasattr(self._result, "__aiter__"):
            yield await self.read()
            return
        async for chunk in self._result:
            yield chunk

    async def read(self) -> bytes:
        result = self._result
        if hasattr(result, "__aiter__"):
            return await read_limited(result, self._limits.max_response_bytes)
        if isinstance(result, bytes | str):
            return result.encode() if isinstance(result, str) else result
        return json.dumps(result).encode()

    async def aclose(self) -> None:
        return None


class WorkersAiProvider:
    kind = "workers_ai"
    operations = frozenset({CHAT})

    def __init__(self, name: str, base_url: str, account_id: str | None, api_key: str | None,
                 transport: UpstreamTransport, timeout: float, binding: AiBinding | None = None) -> None:
        self.name = name
        self._base = f"{base_url.rstrip('/')}/accounts/{account_id}/ai/run/"
        self._transport = transport
        self._timeout = timeout
        self._binding = binding
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"

    async def chat(self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *,
                   timeout: float | None = None) -> UpstreamResponse:
        check_model_name(model)
        inputs = to_workers_ai_inputs(body)
        stream = inputs.get("stream") is True
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if self._binding is not None:
            result = await self._binding.run(model, inputs)
            if stream:
                if isinstance(result, dict):
                    raise UpstreamError("the AI binding answered JSON to a streaming request")
            return OpenAIFromWorkersAi(_BindingResult(result), model, stream, include_usage)
        response = await self._transport.send("POST", self._base + model, {**forward_headers, **self._headers},
                                              json.dumps(inputs).encode(), timeout or self._timeout)
        return OpenAIFromWorkersAi(response, model, stream, include_usage)
