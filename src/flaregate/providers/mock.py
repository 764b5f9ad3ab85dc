"""The built-in mock provider: a deterministic reply derived from the request, no network.

It lets a fresh install answer at once, and gives the tests a provider with no I/O.

Programmable faults, for trying routes and failover without a network: the mock fails
when the target's model is ``fail-<fault>`` (route ``"flaky/fail-503"``) or its provider
config has ``"fault": "<fault>"``. Faults: an HTTP status (``500``, ``502``, ``503``,
``429``; 429 and 503 carry ``Retry-After: 1``), ``timeout`` (raised as an upstream
timeout), ``unreachable`` (a connection error), ``malformed`` (200 with a body that is
not JSON), ``stream_cut`` (streams: two chunks, then the connection breaks),
``stream_error`` (streams: an error event first).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ..ports import UpstreamError, UpstreamTimeout
from .base import CHAT, EMBEDDINGS

FAULT_PREFIX = "fail-"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def reply_for(messages: list[dict[str, Any]]) -> str:
    last_user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    return f"Flaregate mock reply to: {last_user[:500]}" if last_user else "Flaregate mock reply."


class StaticResponse:
    """An UpstreamResponse whose body is already in memory (or produced by a generator)."""

    def __init__(self, status: int, headers: Mapping[str, str], chunks: list[bytes]) -> None:
        self.status = status
        self.headers = dict(headers)
        self._chunks = chunks

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    async def read(self) -> bytes:
        return b"".join(self._chunks)

    async def aclose(self) -> None:
        return None


class _CutStream(StaticResponse):
    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
        raise UpstreamError("mock fault: stream cut")


def _fault_response(fault: str, stream: bool) -> StaticResponse | None:
    if fault.isdigit():
        status = int(fault)
        headers = {"content-type": "application/json"}
        if status in (429, 503):
            headers["retry-after"] = "1"
        error = {"error": {"message": f"mock fault: HTTP {status}", "type": "server_error", "code": None, "param": None}}
        return StaticResponse(status, headers, [json.dumps(error).encode()])
    if fault == "timeout":
        raise UpstreamTimeout("mock fault: timeout")
    if fault == "unreachable":
        raise UpstreamError("mock fault: unreachable")
    if fault == "malformed":
        return StaticResponse(200, {"content-type": "application/json"}, [b'{"choices": [{'])
    if fault == "stream_error" and stream:
        error = {"error": {"message": "mock fault: error event", "type": "server_error", "code": None, "param": None}}
        return StaticResponse(200, {"content-type": "text/event-stream"}, [b"data: " + json.dumps(error).encode() + b"\n\n"])
    return None


class MockProvider:
    kind = "mock"
    operations = frozenset({CHAT, EMBEDDINGS})

    def __init__(self, name: str = "mock", fault: str | None = None) -> None:
        self.name = name
        self.fault = fault

    def _fault(self, model: str) -> str | None:
        return self.fault or (model[len(FAULT_PREFIX):] if model.startswith(FAULT_PREFIX) else None)

    async def embeddings(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *, timeout: float | None = None
    ) -> StaticResponse:
        fault = self._fault(model)
        if fault and (failed := _fault_response(fault, False)) is not None:
            return failed
        items = body.get("input")
        items = items if isinstance(items, list) and items and not isinstance(items[0], int) else [items]
        data = [{"object": "embedding", "index": i,
                 "embedding": [(b - 128) / 128 for b in hashlib.sha256(json.dumps(item).encode()).digest()[:8]]}
                for i, item in enumerate(items)]
        tokens = sum(len(json.dumps(item).split()) for item in items)
        result = {"object": "list", "data": data, "model": model,
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return StaticResponse(200, {"content-type": "application/json"}, [json.dumps(result).encode()])

    async def probe(self, timeout: float) -> bool:
        return self.fault is None

    async def chat(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *, timeout: float | None = None
    ) -> StaticResponse:
        fault = self._fault(model)
        if fault and (failed := _fault_response(fault, bool(body.get("stream")))) is not None:
            return failed
        messages = body.get("messages") or []
        content = reply_for(messages)
        seed = json.dumps(messages, sort_keys=True, default=str).encode()
        completion_id = "chatcmpl-mock-" + hashlib.sha256(seed).hexdigest()[:16]
        created = int(time.time())
        prompt_tokens = sum(len(_text(m.get("content")).split()) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(content.split()),
            "total_tokens": prompt_tokens + len(content.split()),
        }
        if not body.get("stream"):
            completion = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": usage,
            }
            return StaticResponse(200, {"content-type": "application/json"}, [json.dumps(completion).encode()])

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            event = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return b"data: " + json.dumps(event).encode() + b"\n\n"

        words = content.split(" ")
        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
        chunks.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(
                b"data: "
                + json.dumps(
                    {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                     "model": model, "choices": [], "usage": usage}
                ).encode()
                + b"\n\n"
            )
        chunks.append(b"data: [DONE]\n\n")
        if fault == "stream_cut":
            return _CutStream(200, {"content-type": "text/event-stream"}, chunks[:2])
        return StaticResponse(200, {"content-type": "text/event-stream"}, chunks)
