"""The built-in mock provider: a deterministic reply derived from the request, no network.

It lets a fresh install answer at once, and gives the tests a provider with no I/O.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any


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


class MockProvider:
    def __init__(self, name: str = "mock") -> None:
        self.name = name

    async def chat(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str]
    ) -> StaticResponse:
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
        return StaticResponse(200, {"content-type": "text/event-stream"}, chunks)
