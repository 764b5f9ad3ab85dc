"""The mock upstream's Realtime endpoint: ``GET /v1/realtime?model=...`` upgraded to a WebSocket
speaking the GA event names the ``openai`` SDK's ``client.realtime`` expects.

Standalone like ``mock_upstream.py`` (stdlib only; it never imports flaregate). Served by the
mock's ASGI app for ``websocket`` scopes on that path.

Client events and what the mock answers:
    (on connect)                 session.created {session: {type: "realtime", id, model, ...}}
    session.update               session.updated (the session with the update merged in)
    conversation.item.create     conversation.item.added, conversation.item.done (the item, with an id)
    response.create              response.created, response.output_item.added,
                                 response.content_part.added, then per word of
                                 "echo: <last user text>" a response.output_text.delta (or, with
                                 output_modalities ["audio"], response.output_audio.delta of
                                 base64 PCM and response.output_audio_transcript.delta), the
                                 .done events, then response.done with usage {input_tokens,
                                 output_tokens, total_tokens, input_token_details {text_tokens,
                                 audio_tokens, cached_tokens, cached_tokens_details},
                                 output_token_details {text_tokens, audio_tokens}}
    response.cancel              response.done with status "cancelled" (when one is running)
    anything else                error {type: "invalid_request_error", code: "unknown_event"}

Tokens: input = words of every item's text before the response plus the instructions; cached
= the input of the previous responses (a prefix cache); output text = words of the reply; output audio =
8 per audio delta.

Faults (the mock's queue, ``path`` "/v1/realtime"):
    realtime_refuse  refuse the upgrade: HTTP "status" (403) with an OpenAI error body
    realtime_drop    after "after_chunks" (2) deltas of the next response, drop the TCP
                     connection (no close frame): a provider that vanishes mid-response
    realtime_slow    wait "interval" (0.5) s before each delta of every response of the session
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
from collections.abc import Callable
from typing import Any

PATH = "/v1/realtime"
FAULT_KINDS = frozenset({"realtime_refuse", "realtime_drop", "realtime_slow"})
AUDIO_TOKENS_PER_DELTA = 8
_WORDS = re.compile(r"\S+\s*")
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_mock{next(_ids):06d}"


def _words(text: str) -> int:
    return len(text.split())


class RealtimeSession:
    """One upstream session: its conversation, and the usage it reports."""

    def __init__(self, model: str, fault: dict | None, send: Callable[[dict], Any]) -> None:
        self.model = model
        self.send = send
        self.session: dict[str, Any] = {"type": "realtime", "object": "realtime.session", "id": _id("sess"),
                                        "model": model, "output_modalities": ["text"], "instructions": "",
                                        "audio": {"output": {"voice": "alloy", "format": {"type": "audio/pcm",
                                                                                          "rate": 24000}}}}
        self.items: list[dict] = []
        self.cached = 0  # input tokens earlier responses already read
        self.slow = float(fault.get("interval", 0.5)) if fault and fault["kind"] == "realtime_slow" else 0.0
        self.drop_after = int(fault.get("after_chunks", 2)) if fault and fault["kind"] == "realtime_drop" else -1
        self.running: asyncio.Task | None = None
        self.received: list[str] = []  # event types, for the stats

    async def event(self, ev: dict) -> bool:
        """Handle one client event; False: the connection must be dropped (the fault)."""
        kind = ev.get("type")
        self.received.append(str(kind))
        if kind == "session.update":
            update = ev.get("session") if isinstance(ev.get("session"), dict) else {}
            self.session.update({k: v for k, v in update.items() if k != "type"})
            await self.send({"type": "session.updated", "event_id": _id("event"), "session": self.session})
        elif kind == "conversation.item.create":
            item = dict(ev.get("item") or {})
            item.setdefault("id", _id("item"))
            item.setdefault("object", "realtime.item")
            item["status"] = "completed"
            previous = self.items[-1]["id"] if self.items else None
            self.items.append(item)
            for name in ("conversation.item.added", "conversation.item.done"):
                await self.send({"type": name, "event_id": _id("event"), "previous_item_id": previous, "item": item})
        elif kind == "response.create":
            return await self._respond(ev.get("response") or {})
        elif kind == "response.cancel":
            pass
        else:
            await self.send({"type": "error", "event_id": _id("event"),
                             "error": {"type": "invalid_request_error", "code": "unknown_event",
                                       "message": f"mock: unknown event type {kind!r}", "event_id": ev.get("event_id")}})
        return True

    def _last_user_text(self) -> str:
        for item in reversed(self.items):
            if item.get("role") == "user":
                parts = item.get("content") or []
                return " ".join(str(p.get("text") or p.get("transcript") or "") for p in parts if isinstance(p, dict))
        return ""

    def _input_tokens(self) -> int:
        texts = [str(self.session.get("instructions") or "")]
        for item in self.items:
            for part in item.get("content") or []:
                if isinstance(part, dict):
                    texts.append(str(part.get("text") or ""))
        return sum(_words(t) for t in texts)

    async def _respond(self, options: dict) -> bool:
        modalities = options.get("output_modalities") or self.session.get("output_modalities") or ["text"]
        audio = "audio" in modalities
        rid, item_id = _id("resp"), _id("item")
        response: dict[str, Any] = {"object": "realtime.response", "id": rid, "status": "in_progress",
                                    "output": [], "output_modalities": modalities, "usage": None}
        await self.send({"type": "response.created", "event_id": _id("event"), "response": response})
        item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                "status": "in_progress", "content": []}
        await self.send({"type": "response.output_item.added", "event_id": _id("event"), "response_id": rid,
                         "output_index": 0, "item": item})
        part = {"type": "output_audio" if audio else "output_text"}
        await self.send({"type": "response.content_part.added", "event_id": _id("event"), "response_id": rid,
                         "item_id": item_id, "output_index": 0, "content_index": 0, "part": part})
        text = f"echo: {self._last_user_text()}"
        pieces = _WORDS.findall(text) or [text]
        deltas = 0
        for piece in pieces:
            if self.slow:
                await asyncio.sleep(self.slow)
            if deltas == self.drop_after:
                return False
            base = {"event_id": _id("event"), "response_id": rid, "item_id": item_id, "output_index": 0,
                    "content_index": 0}
            if audio:
                pcm = base64.b64encode(piece.encode() * 4).decode()
                await self.send({"type": "response.output_audio.delta", **base, "delta": pcm})
                await self.send({"type": "response.output_audio_transcript.delta", **base, "delta": piece})
            else:
                await self.send({"type": "response.output_text.delta", **base, "delta": piece})
            deltas += 1
        base = {"event_id": _id("event"), "response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        if audio:
            await self.send({"type": "response.output_audio.done", **base})
            await self.send({"type": "response.output_audio_transcript.done", **base, "transcript": text})
            content = {"type": "output_audio", "transcript": text}
        else:
            await self.send({"type": "response.output_text.done", **base, "text": text})
            content = {"type": "output_text", "text": text}
        await self.send({"type": "response.content_part.done", **base, "part": content})
        item = {**item, "status": "completed", "content": [content]}
        input_tokens = self._input_tokens()  # what this response read: the items before it
        self.items.append(item)
        await self.send({"type": "response.output_item.done", "event_id": _id("event"), "response_id": rid,
                         "output_index": 0, "item": item})
        cached = min(self.cached, input_tokens)
        self.cached = input_tokens
        out_text = _words(text)
        out_audio = deltas * AUDIO_TOKENS_PER_DELTA if audio else 0
        usage = {"total_tokens": input_tokens + out_text + out_audio, "input_tokens": input_tokens,
                 "output_tokens": out_text + out_audio,
                 "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0, "image_tokens": 0,
                                         "cached_tokens": cached,
                                         "cached_tokens_details": {"text_tokens": cached, "audio_tokens": 0,
                                                                   "image_tokens": 0}},
                 "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio}}
        done = {**response, "status": "completed", "output": [item], "usage": usage}
        await self.send({"type": "response.done", "event_id": _id("event"), "response": done})
        return True


async def serve(app: Any, scope: dict, receive: Any, send: Any, fault: dict | None,
                abort: Callable[[Any, Any], Any]) -> dict:
    """One Realtime WebSocket connection; returns its record for the mock's stats."""
    query = dict(pair.split("=", 1) for pair in scope.get("query_string", b"").decode().split("&") if "=" in pair)
    record: dict[str, Any] = {"model": query.get("model"), "how": "open", "events": []}
    if (await receive())["type"] != "websocket.connect":
        record["how"] = "never connected"
        return record
    if fault is not None and fault["kind"] == "realtime_refuse":
        status = int(fault.get("status", 403))
        body = json.dumps({"error": {"message": "mock upstream: realtime refused", "type": "invalid_request_error",
                                     "code": "refused"}}).encode()
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})
        record["how"] = f"refused {status}"
        return record
    protocols = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": "realtime" if "realtime" in protocols else None})

    async def send_event(ev: dict) -> None:
        await send({"type": "websocket.send", "text": json.dumps(ev)})

    session = RealtimeSession(query.get("model") or "gpt-realtime", fault, send_event)
    record["events"] = session.received
    await send_event({"type": "session.created", "event_id": _id("event"), "session": session.session})
    pending: asyncio.Task | None = None
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                record["how"] = f"client closed {message.get('code')}"
                return record
            text = message.get("text")
            if text is None:
                continue
            try:
                ev = json.loads(text)
            except ValueError:
                await send_event({"type": "error", "event_id": _id("event"),
                                  "error": {"type": "invalid_request_error", "code": "invalid_json",
                                            "message": "mock: not JSON"}})
                continue
            if not isinstance(ev, dict):
                continue
            if ev.get("type") == "response.create":
                # Answered in the background: the socket keeps reading (a cancel, a close).
                if pending is not None and not pending.done():
                    await pending
                pending = asyncio.ensure_future(session.event(ev))
                pending.add_done_callback(lambda t: None)

                def dropped(task: asyncio.Task) -> None:
                    if not task.cancelled() and task.exception() is None and task.result() is False:
                        record["how"] = "dropped"
                        asyncio.ensure_future(abort(send, receive))

                pending.add_done_callback(dropped)
                continue
            await session.event(ev)
    except Exception as exc:  # the gateway closed while this side was sending: still a record
        record["how"] = f"closed while sending ({type(exc).__name__})"
        return record
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
