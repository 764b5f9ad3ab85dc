"""Responses API answers in the response cache: what is stored, and how a hit is replayed.

A miss is recorded as it passes (JSON, or the typed SSE stream, whose final
``response.completed`` event carries the whole response object) and stored when the
response completed; ``incomplete``, failed or cut answers are never stored. Entries hold
the response object (``origin="response"``), so one entry serves a later request in
either shape: JSON as stored, or the typed events a streamed request expects, rebuilt
from the object (``render_events``).
"""

from __future__ import annotations

import json
from typing import Any

from ..cache.layer import CacheLayer, CachePlan
from ..cache.store import CacheEntry, completion_tokens
from ..providers.anthropic_translate import SseParser


def storable_problem(response: Any) -> str | None:
    """Why this Responses answer must not be cached, or None when it may be."""
    if not isinstance(response, dict) or response.get("object") != "response":
        return "not a response object"
    if response.get("status") != "completed":
        return f"status is {str(response.get('status'))[:32]}"
    if not isinstance(response.get("output"), list):
        return "no output"
    return None


class ResponsesRecorder:
    """Sees one flight's bytes; stores the completed response object at the end."""

    def __init__(self, layer: CacheLayer, plan: CachePlan) -> None:
        self._layer = layer
        self._plan = plan
        self._limit = layer.settings.cache.max_entry_bytes
        self._parser = SseParser() if plan.stream else None
        self._parts: list[bytes] = []
        self._size = 0
        self._final: Any = None
        self._target: Any = None
        self._status = 0
        self.stored = False
        self.cold_write_avoided = False
        self.tokens = 0
        self.problem: str | None = None

    def opened(self, target: Any, status: int) -> None:
        self._target, self._status = target, status

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._parser is None:
            if self._size <= self._limit:
                self._parts.append(chunk)
            return
        for kind, data in self._parser.feed(chunk):
            if kind == "response.completed":
                try:
                    self._final = json.loads(data).get("response")
                except (ValueError, AttributeError, RecursionError):
                    self._final = None
                # Stored now, before this event reaches the client: a client that asks again
                # the moment its stream completes finds the entry (the stream's end comes later).
                if self._target is not None and not self.stored:
                    self.problem = self._store(self._target, self._status, True)

    def finish(self, target: Any, status: int, ok: bool) -> None:
        if not self.stored:
            self.problem = self._store(target, status, ok)

    def _store(self, target: Any, status: int, ok: bool) -> str | None:
        if target is None or status != 200:
            return f"upstream status {status}"
        if self._parser is None:
            if not ok or self._size > self._limit:
                return "the body did not arrive whole" if not ok else "larger than the entry limit"
            try:
                response = json.loads(b"".join(self._parts))
            except (ValueError, RecursionError):
                return "the answer is not JSON"
        else:
            response = self._final
        problem = storable_problem(response)
        if problem:
            return problem
        tiers = self._layer.store(self._plan, target.provider.name, response, "response")
        if tiers is None:
            return "larger than the entry limit"
        self.stored, self.tokens = True, completion_tokens(response)
        self.cold_write_avoided = self._layer.cold_write_avoided(tiers)
        return None


def _event(kind: str, seq: int, data: dict[str, Any]) -> bytes:
    payload = json.dumps({"type": kind, "sequence_number": seq, **data}, separators=(",", ":"), ensure_ascii=False)
    return b"event: " + kind.encode() + b"\ndata: " + payload.encode() + b"\n\n"


def _item_events(position: int, item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The events that build one output item, in the order OpenAI sends them."""
    events: list[tuple[str, dict[str, Any]]] = []
    kind = item.get("type")
    if kind == "message":
        opened = {**item, "status": "in_progress", "content": []}
        events.append(("response.output_item.added", {"output_index": position, "item": opened}))
        for index, part in enumerate(item.get("content") or []):
            if not isinstance(part, dict):
                continue
            common = {"item_id": item.get("id"), "output_index": position, "content_index": index}
            text = part.get("text") if part.get("type") == "output_text" else None
            empty = {**part, "text": ""} if isinstance(text, str) else part
            events.append(("response.content_part.added", {**common, "part": empty}))
            if isinstance(text, str):
                events.append(("response.output_text.delta", {**common, "delta": text, "logprobs": []}))
                events.append(("response.output_text.done", {**common, "text": text, "logprobs": []}))
            events.append(("response.content_part.done", {**common, "part": part}))
    elif kind == "function_call":
        arguments = str(item.get("arguments") or "")
        events.append(("response.output_item.added", {"output_index": position,
                                                      "item": {**item, "status": "in_progress", "arguments": ""}}))
        common = {"item_id": item.get("id"), "output_index": position}
        events.append(("response.function_call_arguments.delta", {**common, "delta": arguments}))
        events.append(("response.function_call_arguments.done", {**common, "arguments": arguments}))
    else:  # reasoning and other items: announced whole
        events.append(("response.output_item.added", {"output_index": position, "item": item}))
    events.append(("response.output_item.done", {"output_index": position, "item": item}))
    return events


def render_events(response: dict[str, Any]) -> bytes:
    """A well-formed Responses API event stream of a completed ``response``."""
    opening = {**response, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str, dict[str, Any]]] = [("response.created", {"response": opening}),
                                                ("response.in_progress", {"response": opening})]
    for position, item in enumerate(response.get("output") or []):
        if isinstance(item, dict):
            events.extend(_item_events(position, item))
    events.append(("response.completed", {"response": response}))
    return b"".join(_event(kind, seq, data) for seq, (kind, data) in enumerate(events))


def render_hit(entry: CacheEntry, plan: CachePlan) -> bytes:
    """The stored response in the shape the request asked for."""
    return render_events(entry.completion) if plan.stream else entry.body.encode()
