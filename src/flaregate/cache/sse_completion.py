"""Chat completions in both shapes: assemble streamed SSE into one completion, render one back.

The cache stores one normalised form, the assembled ``chat.completion`` object, so a
streamed answer can serve a non-streaming request and the reverse. What is preserved is
listed in docs/cache.md: every message field (text fields such as ``content``,
``refusal`` and ``reasoning_content`` are concatenated; ``tool_calls`` are merged by
index), ``finish_reason``, ``logprobs``, ``usage`` and the top-level ids. Chunk boundaries
are not: a replay re-chunks the text.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from ..sse_buffer import EventBuffer, split_events

_META_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")
# Strings under these names identify something; later deltas replace them, never extend.
_IDENTITY_FIELDS = frozenset({"role", "id", "type", "name", "index"})
_PIECES = re.compile(r"\S+\s*|\s+")
_PIECE_CHARS = 48  # a replayed content delta carries about this much text


def _merge(into: dict[str, Any], delta: dict[str, Any]) -> None:
    for name, value in delta.items():
        old = into.get(name)
        if value is None:
            into.setdefault(name, None)
        elif name == "tool_calls" and isinstance(value, list):
            into["tool_calls"] = calls = old if isinstance(old, list) else []
            _merge_indexed(calls, value)
        elif isinstance(value, str) and isinstance(old, str) and name not in _IDENTITY_FIELDS:
            into[name] = old + value
        elif isinstance(value, dict) and isinstance(old, dict):
            _merge(old, value)
        elif isinstance(value, list) and isinstance(old, list):
            old.extend(copy.deepcopy(value))
        else:
            into[name] = copy.deepcopy(value)


def _merge_indexed(calls: list[dict[str, Any]], deltas: list[Any]) -> None:
    for position, delta in enumerate(deltas):
        if not isinstance(delta, dict):
            continue
        index = delta.get("index", position)
        existing = next((c for c in calls if c.get("index") == index), None)
        if existing is None:
            calls.append({"index": index})
            existing = calls[-1]
        _merge(existing, delta)


class StreamAssembler:
    """Fed the raw SSE bytes of one chat-completion stream as they pass; never blocks them.

    ``completion()`` is the assembled object once the stream ended with ``data: [DONE]``,
    or None with ``problem`` saying why it cannot be (too large, an error event, unfinished).
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._size = 0
        self._events = EventBuffer(max_bytes)  # never over it: the whole stream is not
        self._data: list[str] = []
        self._meta: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: Any = None
        self.done = False
        self.problem: str | None = None

    def feed(self, chunk: bytes) -> None:
        if self.problem is not None or self.done:
            return
        self._size += len(chunk)
        if self._size > self._max_bytes:
            self._fail("the stream is larger than the cache's entry limit")
            return
        region = self._events.feed(chunk)  # linear: only the new bytes are searched
        try:
            for event in split_events(region) if region else ():
                self._lines([*event.split(b"\n"), b""])  # its lines, then the blank line
                if self.problem is not None or self.done:
                    return
        except RecursionError:
            self._fail("the stream carried an event nested too deeply")

    def _lines(self, lines: list[bytes]) -> None:
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                self._dispatch()
            elif line.startswith("data:"):
                self._data.append(line[6:] if line.startswith("data: ") else line[5:])
            elif line.startswith("event:") and line[6:].strip() == "error":
                self._fail("the stream carried an error event")
            if self.problem is not None or self.done:
                return

    def _fail(self, problem: str) -> None:
        self.problem = problem
        self._events = EventBuffer()
        self._data = []
        self._choices = {}

    def _dispatch(self) -> None:
        if not self._data:
            return  # a comment or keep-alive
        data, self._data = "\n".join(self._data), []
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            event = json.loads(data)
        except RecursionError:
            self._fail("the stream carried an event nested too deeply")
            return
        except ValueError:
            self._fail("the stream carried an event that is not JSON")
            return
        if not isinstance(event, dict) or "error" in event:
            self._fail("the stream carried an error event")
            return
        for name in _META_FIELDS:
            if self._meta.get(name) is None and event.get(name) is not None:
                self._meta[name] = event[name]
        if event.get("usage") is not None:
            self._usage = event["usage"]
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or not isinstance(choice.get("index", 0), int):
                self._fail("the stream carried a malformed choice")
                return
            slot = self._choices.setdefault(choice.get("index", 0), {"message": {}, "logprobs": None,
                                                                     "finish_reason": None})
            if isinstance(choice.get("delta"), dict):
                _merge(slot["message"], choice["delta"])
            if isinstance(choice.get("logprobs"), dict):
                if slot["logprobs"] is None:
                    slot["logprobs"] = {}
                _merge(slot["logprobs"], choice["logprobs"])
            if choice.get("finish_reason") is not None:
                slot["finish_reason"] = choice["finish_reason"]

    def completion(self) -> dict[str, Any] | None:
        if self.problem is not None:
            return None
        if not self.done:
            self.problem = "the stream did not end with data: [DONE]"
            return None
        if not self._choices:
            self.problem = "the stream had no choices"
            return None
        choices = []
        for index in sorted(self._choices):
            slot = self._choices[index]
            message = slot["message"]
            message.setdefault("role", "assistant")
            message.setdefault("content", None)
            for call in message.get("tool_calls") or []:
                call.pop("index", None)
            choices.append({"index": index, "message": message, "logprobs": slot["logprobs"],
                            "finish_reason": slot["finish_reason"]})
        completion: dict[str, Any] = {"id": self._meta.get("id"), "object": "chat.completion",
                                      "created": self._meta.get("created"), "model": self._meta.get("model")}
        for name in ("system_fingerprint", "service_tier"):
            if name in self._meta:
                completion[name] = self._meta[name]
        completion["choices"] = choices
        if self._usage is not None:
            completion["usage"] = self._usage
        return completion


def storable_problem(completion: Any, skip_length_finish: bool) -> str | None:
    """Why this completion must not be cached, or None when it may be."""
    if not isinstance(completion, dict) or "error" in completion:
        return "not a completion"
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no choices"
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            return "a choice without a message"
        reason = choice.get("finish_reason")
        if not isinstance(reason, str) or not reason:
            return "an unfinished choice"
        if skip_length_finish and reason == "length":
            return "finish_reason is length (cut by max_tokens)"
    return None


def _pieces(text: str) -> list[str]:
    pieces: list[str] = []
    for word in _PIECES.findall(text):
        if pieces and len(pieces[-1]) + len(word) <= _PIECE_CHARS:
            pieces[-1] += word
        else:
            pieces.append(word)
    return pieces


def render_sse(completion: dict[str, Any], include_usage: bool) -> bytes:
    """A well-formed OpenAI chat-completion stream of ``completion``, ending in [DONE]."""
    base: dict[str, Any] = {"id": completion.get("id"), "object": "chat.completion.chunk",
                            "created": completion.get("created"), "model": completion.get("model")}
    for name in ("system_fingerprint", "service_tier"):
        if name in completion:
            base[name] = completion[name]
    if include_usage:
        base["usage"] = None  # as OpenAI does on every chunk but the last
    out: list[bytes] = []

    def emit(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> None:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        out.append(b"data: " + json.dumps({**base, "choices": [choice]}, separators=(",", ":"),
                                          ensure_ascii=False).encode() + b"\n\n")

    for choice in completion.get("choices") or []:
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        content = message.get("content")
        emit(index, {"role": message.get("role", "assistant"), "content": "" if isinstance(content, str) else None})
        for name, value in message.items():
            if name not in ("role", "content", "tool_calls", "function_call") and value is not None:
                emit(index, {name: value})
        logprobs = choice.get("logprobs")
        if isinstance(content, str) and content:
            if logprobs is not None:  # one delta keeps the text and its logprobs aligned
                emit(index, {"content": content}, logprobs=logprobs)
            else:
                for piece in _pieces(content):
                    emit(index, {"content": piece})
        elif logprobs is not None:
            emit(index, {}, logprobs=logprobs)
        if message.get("tool_calls"):
            calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            emit(index, {"tool_calls": calls})
        if message.get("function_call"):
            emit(index, {"function_call": message["function_call"]})
        emit(index, {}, choice.get("finish_reason"))
    if include_usage and completion.get("usage") is not None:
        final = {**base, "choices": [], "usage": completion["usage"]}
        out.append(b"data: " + json.dumps(final, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)
