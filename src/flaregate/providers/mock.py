"""The built-in mock provider: a deterministic reply derived from the request, no network.

It lets a fresh install answer at once, and gives the tests a provider with no I/O.

Programmable faults, for trying routes and failover without a network: the mock fails
when the target's model is ``fail-<fault>`` (route ``"flaky/fail-503"``) or its provider
config has ``"fault": "<fault>"``. Faults: an HTTP status (``500``, ``502``, ``503``,
``429``; 429 and 503 carry ``Retry-After: 1``), ``timeout`` (raised as an upstream
timeout), ``unreachable`` (a connection error), ``malformed`` (200 with a body that is
not JSON), ``stream_cut`` (streams: two chunks, then the connection breaks),
``stream_error`` (streams: an error event first).

OpenAI's other endpoints, deterministic: moderations flag an input that contains "kill"
(category ``violence``); images are a 1x1 PNG, as base64 (``response_format: b64_json``)
or a URL; speech is a short byte sequence derived from the input, ``audio/mpeg`` (three
chunks); a transcription's text names the uploaded file and its size.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ..multipart import Upload
from ..ports import UpstreamError, UpstreamTimeout
from .base import CHAT, EMBEDDINGS, IMAGES, MODERATIONS, SPEECH, TRANSCRIPTIONS

FAULT_PREFIX = "fail-"
# Embedding models whose name starts so embed by bag of words (the semantic cache's tests):
# prompts that share words are close, as a real model's paraphrases are. Other names get
# hash vectors with no meaning (8 floats from the input's SHA-256).
BAG_OF_WORDS_PREFIX = "bow"
BAG_OF_WORDS_DIMENSIONS = 64


def bag_of_words(text: str, dimensions: int = BAG_OF_WORDS_DIMENSIONS) -> list[float]:
    """A deterministic embedding: each lower-cased word adds +-1 at a dimension its SHA-256
    picks (k/8 steps: exact in float32, so JSON and base64 answers agree)."""
    vector = [0.0] * dimensions
    for word in "".join(c if c.isalnum() else " " for c in text.lower()).split():
        digest = hashlib.sha256(word.encode()).digest()
        vector[int.from_bytes(digest[:4], "big") % dimensions] += 1.0 if digest[4] & 1 else -1.0
    return vector
# A 1x1 transparent PNG: what every generated image is.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
IMAGE_URL = "https://mock.flaregate.invalid/images/{}.png"
MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
                         "sexual/minors", "violence", "violence/graphic")
AUDIO_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
               "wav": "audio/wav", "pcm": "audio/pcm"}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def speech_audio(text: str, voice: str) -> list[bytes]:
    """The mock's speech: an ID3 tag, then 3 chunks of 1 KiB derived from the text and voice."""
    seed = hashlib.sha256(f"{voice}\n{text}".encode()).digest()
    body = b"".join(hashlib.sha256(seed + bytes([i])).digest() for i in range(96))
    return [b"ID3\x04\x00\x00\x00\x00\x00\x00" + body[:1014], body[1014:2038], body[2038:3062]]


def transcript_for(upload: Upload) -> str:
    return f"Flaregate mock transcription of {upload.filename[:200]} ({upload['size']} bytes)."


def _json(result: Any) -> StaticResponse:
    return StaticResponse(200, {"content-type": "application/json"}, [json.dumps(result).encode()])


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
    operations = frozenset({CHAT, EMBEDDINGS, MODERATIONS, IMAGES, SPEECH, TRANSCRIPTIONS})

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
        bow = model.startswith(BAG_OF_WORDS_PREFIX)
        data = [{"object": "embedding", "index": i,
                 "embedding": bag_of_words(str(item)) if bow else
                 [(b - 128) / 128 for b in hashlib.sha256(json.dumps(item).encode()).digest()[:8]]}
                for i, item in enumerate(items)]
        tokens = sum(len(json.dumps(item).split()) for item in items)
        result = {"object": "list", "data": data, "model": model,
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return StaticResponse(200, {"content-type": "application/json"}, [json.dumps(result).encode()])

    async def moderations(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *, timeout: float | None = None
    ) -> StaticResponse:
        fault = self._fault(model)
        if fault and (failed := _fault_response(fault, False)) is not None:
            return failed
        items = body.get("input")
        items = items if isinstance(items, list) else [items]
        results = []
        for item in items:
            text = item if isinstance(item, str) else json.dumps(item, default=str)
            flagged = "kill" in text.lower()
            results.append({
                "flagged": flagged,
                "categories": {c: flagged and c == "violence" for c in MODERATION_CATEGORIES},
                "category_scores": {c: 0.97 if flagged and c == "violence" else 0.0001 for c in MODERATION_CATEGORIES},
                "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
            })
        return _json({"id": "modr-mock-" + _digest(items)[:16], "model": model, "results": results})

    async def images(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *, timeout: float | None = None
    ) -> StaticResponse:
        fault = self._fault(model)
        if fault and (failed := _fault_response(fault, False)) is not None:
            return failed
        n = body.get("n")
        n = n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 10 else 1
        seed = _digest([body.get("prompt"), body.get("size")])[:16]
        if body.get("response_format") == "b64_json":
            data = [{"b64_json": PNG_B64, "revised_prompt": body.get("prompt")} for _ in range(n)]
        else:
            data = [{"url": IMAGE_URL.format(f"{seed}-{i}"), "revised_prompt": body.get("prompt")} for i in range(n)]
        return _json({"created": int(time.time()), "data": data})

    async def speech(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *, timeout: float | None = None
    ) -> StaticResponse:
        fault = self._fault(model)
        if fault and (failed := _fault_response(fault, False)) is not None:
            return failed
        content_type = AUDIO_TYPES.get(str(body.get("response_format") or "mp3"), "audio/mpeg")
        chunks = speech_audio(str(body.get("input") or ""), str(body.get("voice") or ""))
        if fault == "stream_cut":
            return _CutStream(200, {"content-type": content_type}, chunks[:1])
        return StaticResponse(200, {"content-type": content_type}, chunks)

    async def transcriptions(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *, timeout: float | None = None
    ) -> StaticResponse:
        fault = self._fault(model)
        if fault and (failed := _fault_response(fault, False)) is not None:
            return failed
        upload = body.get("file")
        text = transcript_for(upload) if isinstance(upload, Upload) else "Flaregate mock transcription."
        kind = body.get("response_format") or "json"
        if kind == "verbose_json":
            return _json({"task": "transcribe", "language": body.get("language") or "english", "duration": 1.0,
                          "text": text, "segments": []})
        if kind in ("text", "srt", "vtt"):
            cues = {"text": f"{text}\n", "srt": f"1\n00:00:00,000 --> 00:00:01,000\n{text}\n\n",
                    "vtt": f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n\n"}
            return StaticResponse(200, {"content-type": "text/plain; charset=utf-8"}, [cues[kind].encode()])
        return _json({"text": text})

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
