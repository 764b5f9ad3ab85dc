"""Local mock upstream LLM server (OpenAI + Anthropic shapes) for integration tests / benchmarks.

Standalone on purpose: stdlib + uvicorn (server) + httpx (``MockUpstreamProcess`` client); it
never imports flaregate, so it can fake "the internet" for any gateway build.

Run it (prints exactly one stdout line, ``MOCK_UPSTREAM_READY http://HOST:PORT``, once listening)::

    python tests/support/mock_upstream.py --host 127.0.0.1 --port 0
    python -m tests.support.mock_upstream --port 0          # from the repo root

Endpoints
    POST /v1/chat/completions  reply "echo: <last user text>" (or of a last tool message), streaming
                               supported; a tool call {"city": "Paris"} when tools are given and
                               the last user message mentions "weather"; the
                               ``x-mock-fixed: 1`` header (or ``--fixed`` for every request)
                               gives a precomputed ~600-byte reply (20 content chunks when
                               streaming) for benchmarks
    POST /v1/embeddings        deterministic vectors: 8 floats (sha256 of each input), or for a
                               model named "bow..." a 64-float bag of words (shared words: close)
    GET  /v1/models            a few model ids
    POST /v1/messages          Anthropic Messages API (text; tool_use if tools + "weather"; SSE)
    POST /v1/moderations       results[i].flagged (category violence) when input i contains "kill"
    POST /v1/images/generations
                               n images (1): a 1x1 PNG as base64 (response_format b64_json) or a URL
    POST /v1/audio/speech      audio/mpeg bytes derived from input + voice (``speech_audio``), sent
                               chunked in 4 body messages of 4 KiB
    POST /v1/audio/transcriptions
                               multipart (fields, then ``file``): {"text": "mock transcript of
                               <filename>: <size> bytes, sha256 <first 16 hex>"}; response_format
                               text / srt / vtt as text/plain. Recorded with the form as its body:
                               the text fields, ``file`` {filename, content_type, size, sha256}
                               and ``_order`` (the part names as sent)
    POST /client/v4/accounts/{account}/ai/run/{model}
                               Cloudflare Workers AI REST: {"result": {"response", "usage"},
                               "success": true}; streaming: data: {"response": piece} ... [DONE]
    GET  /v1/realtime          WebSocket: the Realtime API (GA events; see mock_realtime.py,
                               faults realtime_refuse / realtime_drop / realtime_slow)
    GET  /_mock/stats          {"calls": {path: n}, "total": n, "requests": [last 50 records],
                                "faults_pending": n, "open_streams": n, "stream_closes": [last 50
                                {"at": wall-clock s, "how": "complete" | "cut" | "disconnect"}]};
                                /_mock/* calls are never counted. A streamed reply is open from
                                its status line until its last event or until the mock notices
                                the caller hung up (while it waits in a stall or between slow
                                events: at once, through the server's disconnect event)
    POST /_mock/reset          clear counters, request log and faults
    POST /_mock/faults         append a list (or one object) of fault specs; GET lists pending ones

Fault spec: {"kind": ..., "path": exact path (optional), "times": 1 (default) | N | -1 (forever)}
    status           "status" (500), optional "headers" {name: value}, "message"; provider-shaped
    delay            sleep "seconds" (1), then answer normally; with "capacity": N at most N
                     delayed answers at a time, the others queue (a saturated provider)
    slow_first_byte  send status + headers, sleep "seconds" (1), then the body
    reset            abort the TCP connection with an RST before any response byte
    reset_mid_body   send headers + half the body, then close the connection (FIN)
    malformed_json   200 application/json whose body is not valid JSON
    echo_auth_error  "status" (500), provider-shaped, whose message repeats the request's
                     Authorization (or x-api-key) header: a provider that echoes its key
    stream_cut       stream requests only: send "after_chunks" (3) events, then close; no [DONE]
    stream_stall     stream requests only: send "after_chunks" (3) events, sleep "seconds" (30)
    stream_slow      stream requests only: wait "interval" (0.5) seconds before each event after
                     the first "after_chunks" (1) (an upstream that keeps sending, slowly)
Hostile upstreams (gateway caps; each stops when the caller hangs up, or after "seconds" (120)):
    endless_line     stream requests only: 200 SSE, then "data: xxxx..." in 64 KiB chunks, never a newline
    endless_stream   stream requests only: 200 SSE, whole events (chat chunks; Anthropic events on
                     /v1/messages) in 64 KiB batches, forever, never [DONE] / message_stop
    huge_body        any request: 200 application/json whose body is "bytes" (1 GiB) long, made chunk by
                     chunk (never held); with "length": false no content-length (chunked encoding)
    GET /_mock/hostile lists how each ended: [{"kind", "bytes" sent, "how": "disconnect" | "timeout" |
                     "complete", "seconds"}] (the last 50; cleared by /_mock/reset)
Faults form a FIFO queue; each request takes the first fault whose filters match it.

On the wire: under uvicorn the app reaches the connection's asyncio transport through
``send.__self__.transport`` (uvicorn's RequestResponseCycle, for both the httptools and h11
protocols on asyncio or uvloop) and calls ``transport.abort()``.  For "reset" SO_LINGER=0 is set
first, so the kernel sends a TCP RST and no status line: httpx raises ReadError ("Connection reset
by peer"), never a clean 500.  "reset_mid_body" and "stream_cut" abort without linger: the bytes
already written are delivered, then FIN, so the client sees a truncated body / chunked stream
(httpx RemoteProtocolError "peer closed connection without sending complete message body").
On a server without that attribute the app raises instead (uvicorn would then send a 500).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hashlib
import itertools
import json
import queue
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flaregate.providers.mock import BAG_OF_WORDS_PREFIX, bag_of_words

try:  # run as a script (its folder on sys.path) or imported as tests.support.mock_upstream
    import mock_realtime
except ImportError:  # pragma: no cover - depends on how the mock is started
    from tests.support import mock_realtime

READY_PREFIX = "MOCK_UPSTREAM_READY"
MODEL_IDS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-3-5-sonnet-latest")
FAULT_KINDS = frozenset(
    {
        "status",
        "delay",
        "slow_first_byte",
        "reset",
        "reset_mid_body",
        "malformed_json",
        "echo_auth_error",
        "stream_cut",
        "stream_stall",
        "stream_slow",
        *mock_realtime.FAULT_KINDS,
    }
)
STREAM_FAULTS = frozenset({"stream_cut", "stream_stall", "stream_slow"})
HOSTILE_FAULTS = frozenset({"endless_line", "endless_stream", "huge_body"})
HOSTILE_STREAM_FAULTS = frozenset({"endless_line", "endless_stream"})
HOSTILE_PIECE = 64 * 1024  # bytes per body message of a hostile answer
MAX_RECORDS = 50

_WORDS = re.compile(r"\S+\s*|\s+")  # pieces whose concatenation is exactly the input
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)
_WORKERS_AI = re.compile(r"^/client/v4/accounts/[^/]+/ai/run/.+$")
_INVALID = object()  # marker: body was present but not JSON

_OPENAI_ERR = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    429: "rate_limit_exceeded",
}
_ANTHROPIC_ERR = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
MODERATION_CATEGORIES = ("harassment", "hate", "illicit", "self-harm", "sexual", "violence")

_JSON_CT = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


# -------------------- helpers


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


def _anthropic_sse(obj: dict) -> bytes:
    return b"event: " + obj["type"].encode() + b"\ndata: " + _dumps(obj) + b"\n\n"


def _text(content: Any) -> str:
    """Text of a message content: a str, or a list of parts (text parts joined by a space)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def _tool_results_text(content: Any) -> str:
    """Text inside Anthropic tool_result blocks (so a tool round-trip gets a readable echo)."""
    if not isinstance(content, list):
        return ""
    return " ".join(
        _text(p.get("content"))
        for p in content
        if isinstance(p, dict) and p.get("type") == "tool_result"
    )


def _words(text: str) -> int:
    return len(text.split())


def _last_user(messages: list) -> dict:
    return next(
        (m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {}
    )


def _embedding(item: Any, model: str = "") -> list[float]:
    # k/128 values are exact in float32, so the float and base64 encodings agree bit for bit.
    if model.startswith(BAG_OF_WORDS_PREFIX) and isinstance(item, str):
        return bag_of_words(item)  # paraphrases sharing words are close (the semantic cache's tests)
    key = item if isinstance(item, str) else json.dumps(item)
    return [(b - 128) / 128 for b in hashlib.sha256(key.encode()).digest()[:8]]


@dataclass(slots=True)
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    events: list[bytes] | None = None  # SSE events: streamed one per ASGI body message


def speech_audio(text: str, voice: str) -> list[bytes]:
    """The mock's speech: 4 chunks of 4 KiB derived from the input and voice, an ID3 tag first."""
    seed = hashlib.sha256(f"{voice}|{text}".encode()).digest()
    audio = b"ID3\x04\x00" + b"".join(hashlib.sha256(seed + i.to_bytes(2, "big")).digest() for i in range(512))
    return [audio[i:i + 4096] for i in range(0, 4 * 4096, 4096)]


def _form(raw: bytes, content_type: str) -> Any:
    """A multipart form as the recorded body: text fields, each file as {filename,
    content_type, size, sha256}, and ``_order`` (the part names as sent); _INVALID if malformed."""
    found = re.search(r'boundary="?([^";]+)"?', content_type)
    if found is None:
        return _INVALID
    pieces = raw.split(b"--" + found.group(1).encode())
    if len(pieces) < 3 or not pieces[-1].startswith(b"--"):
        return _INVALID
    form: dict[str, Any] = {"_order": []}
    for piece in pieces[1:-1]:
        head, sep, content = piece[2:-2].partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if not sep or name is None:
            return _INVALID
        key = name.group(1).decode()
        form["_order"].append(key)
        filename = re.search(rb'filename="([^"]*)"', head)
        if filename is None:
            form[key] = content.decode()
            continue
        ctype = re.search(rb"(?i)content-type:\s*([^\r\n]+)", head)
        form[key] = {"filename": filename.group(1).decode(), "content_type": ctype.group(1).decode() if ctype else None,
                     "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    return form


def _json_reply(status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
    return Reply(status, [_JSON_CT, *(headers or [])], _dumps(obj))


def _error(
    status: int, message: str, anthropic: bool, headers: list[tuple[bytes, bytes]] | None = None
) -> Reply:
    if anthropic:
        etype = _ANTHROPIC_ERR.get(status, "api_error")
        return _json_reply(
            status, {"type": "error", "error": {"type": etype, "message": message}}, headers
        )
    etype = _OPENAI_ERR.get(status, "server_error")
    return _json_reply(
        status, {"error": {"message": message, "type": etype, "param": None, "code": None}}, headers
    )


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":  # client went away mid-request
            return b"".join(chunks)
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return b"".join(chunks)


async def _until_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _idle(receive, seconds: float) -> bool:
    """Sleep, but wake early if the client hangs up (returns True then) so stalls don't pile up."""
    try:
        await asyncio.wait_for(_until_disconnect(receive), seconds)
        return True
    except TimeoutError:
        return False


async def _abort(send, receive, rst: bool) -> None:
    """Drop the TCP connection under the HTTP layer (see the module docstring)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionAbortedError("mock_upstream: no transport to abort on this server")
    if rst:
        with contextlib.suppress(Exception):  # uvloop's pseudo-socket supports this too
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let uvicorn's connection_lost mark the cycle disconnected, so it neither writes a 500
    # nor logs "returned without starting response" when we return.
    await _idle(receive, 1.0)


async def _abort_websocket(send, receive) -> None:
    """Drop a WebSocket's TCP connection without a close frame (a provider that vanishes)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:
        transport.abort()
    else:
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": 1011})


def _hostile_stream(kind: str, path: str) -> tuple[bytes, bytes]:
    """(the first body message, the one repeated after it) of a hostile stream."""
    if kind == "endless_line":
        return b"data: " + b"x" * (HOSTILE_PIECE - 6), b"x" * HOSTILE_PIECE
    if path.startswith("/v1/messages"):
        start = {"type": "message_start", "message": {"id": "msg_endless", "type": "message", "role": "assistant",
                                                      "model": "mock", "content": [], "usage": {"input_tokens": 1}}}
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        first = _anthropic_sse(start) + _anthropic_sse(block)
        event = _anthropic_sse({"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": "more "}})
    else:
        chunk = {"id": "chatcmpl-endless", "object": "chat.completion.chunk", "created": 1700000000,
                 "model": "mock", "choices": [{"index": 0, "delta": {"content": "more "}, "finish_reason": None}]}
        first = _sse({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                            "finish_reason": None}]})
        event = _sse(chunk)
    return first, event * max(1, HOSTILE_PIECE // len(event))


# -------------------- the app


class MockUpstreamApp:
    """Raw ASGI app; all state lives on the instance (one event loop, so no locks)."""

    def __init__(self, fixed: bool = False) -> None:
        self._seq = itertools.count(1)  # ids stay unique across resets
        self._fixed_cache: dict[tuple, Reply] = {}
        self.fixed = fixed  # every chat completion gets the fixed benchmark reply
        self.hostile_log: collections.deque[dict] = collections.deque(maxlen=MAX_RECORDS)
        self.open_streams = 0  # streamed replies being delivered now (a reset leaves them be)
        self.reset()

    def reset(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.total = 0
        self.requests: collections.deque[dict] = collections.deque(maxlen=MAX_RECORDS)
        self.faults: list[dict] = []
        self.stream_closes: collections.deque[dict] = collections.deque(maxlen=MAX_RECORDS)
        self.realtime: collections.deque[dict] = collections.deque(maxlen=MAX_RECORDS)

    def stats(self) -> dict:
        return {
            "calls": dict(self.calls),
            "total": self.total,
            "requests": list(self.requests),
            "faults_pending": len(self.faults),
            "open_streams": self.open_streams,
            "stream_closes": list(self.stream_closes),
            "realtime": list(self.realtime),
        }

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await self._realtime(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        raw = await _read_body(receive)
        if path.startswith("/_mock/"):
            await self._deliver(self._control(method, path, raw), None, send, receive)
            return

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if headers.get("content-type", "").startswith("multipart/form-data"):
            body = _form(raw, headers["content-type"])
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = _INVALID
        self.calls[path] += 1
        self.total += 1
        self.requests.append(
            {
                "method": method,
                "path": path,
                "headers": headers,
                "body": None if body is _INVALID else body,
            }
        )

        stream = isinstance(body, dict) and body.get("stream") is True
        fault = self._take_fault(path, stream) if self.faults else None
        kind = fault["kind"] if fault else None
        if kind == "reset":
            await _abort(send, receive, rst=True)
            return
        if kind in HOSTILE_FAULTS:
            await self._hostile(kind, fault, path, send, receive)
            return
        if kind == "delay":
            async with self._capacity(fault):
                if await _idle(receive, float(fault.get("seconds", 1.0))):
                    return
        if kind == "status":
            status = int(fault.get("status", 500))
            extra = [
                (str(k).lower().encode(), str(v).encode())
                for k, v in (fault.get("headers") or {}).items()
            ]
            msg = fault.get("message") or f"mock upstream: injected HTTP {status}"
            reply = _error(status, msg, path.startswith("/v1/messages"), extra)
        elif kind == "echo_auth_error":
            status = int(fault.get("status", 500))
            seen = headers.get("authorization") or headers.get("x-api-key") or "(none)"
            reply = _error(status, f"invalid credentials: {seen} was refused", path.startswith("/v1/messages"))
        elif kind == "malformed_json":
            reply = Reply(
                200,
                [_JSON_CT],
                b'{"id": "mock-malformed", "object": "chat.completion", "choices": [{',
            )
        else:
            reply = self._route(method, path, headers, body)
        await self._deliver(reply, fault, send, receive)

    async def _realtime(self, scope, receive, send) -> None:
        path = scope["path"]
        if path != mock_realtime.PATH:
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.calls[path] += 1
        self.total += 1
        self.requests.append({"method": "GET", "path": path, "headers": headers,
                              "query": scope.get("query_string", b"").decode(), "body": None})
        fault = self._take_fault(path, False) if self.faults else None
        record = await mock_realtime.serve(self, scope, receive, send, fault, _abort_websocket)
        self.realtime.append(record)

    # -- faults / control

    def _capacity(self, fault: dict) -> Any:
        """The semaphore of a delay fault's "capacity" (one per value), or no limit."""
        capacity = fault.get("capacity")
        if not isinstance(capacity, int) or capacity < 1:
            return contextlib.nullcontext()
        gates = self.__dict__.setdefault("_gates", {})
        return gates.setdefault(capacity, asyncio.Semaphore(capacity))

    def _take_fault(self, path: str, stream: bool) -> dict | None:
        for i, fault in enumerate(self.faults):
            if fault.get("path") not in (None, path) or (
                (fault["kind"] in STREAM_FAULTS or fault["kind"] in HOSTILE_STREAM_FAULTS) and not stream
            ) or ((fault["kind"] in mock_realtime.FAULT_KINDS) != (path == mock_realtime.PATH)):
                continue
            if fault["times"] > 0:
                fault["times"] -= 1
                if fault["times"] == 0:
                    del self.faults[i]
            return fault
        return None

    def _control(self, method: str, path: str, raw: bytes) -> Reply:
        if path == "/_mock/stats" and method == "GET":
            return _json_reply(200, self.stats())
        if path == "/_mock/reset" and method == "POST":
            self.reset()
            self.hostile_log.clear()
            return _json_reply(200, {"ok": True})
        if path == "/_mock/hostile" and method == "GET":
            return _json_reply(200, {"hostile": list(self.hostile_log)})
        if path == "/_mock/faults" and method == "GET":
            return _json_reply(200, {"faults": self.faults})
        if path == "/_mock/faults" and method == "POST":
            try:
                specs = json.loads(raw)
                specs = [specs] if isinstance(specs, dict) else specs
                if not isinstance(specs, list):
                    raise ValueError("expected a JSON list of fault specs")
                new = [self._check_fault(s) for s in specs]
            except (ValueError, TypeError) as exc:
                return _json_reply(400, {"error": str(exc)})
            self.faults.extend(new)
            return _json_reply(200, {"ok": True, "queued": len(self.faults)})
        return _json_reply(404, {"error": f"unknown control endpoint {method} {path}"})

    @staticmethod
    def _check_fault(spec: Any) -> dict:
        if not isinstance(spec, dict) or spec.get("kind") not in FAULT_KINDS | HOSTILE_FAULTS:
            raise ValueError(f"bad fault spec {spec!r}; kind must be one of {sorted(FAULT_KINDS | HOSTILE_FAULTS)}")
        spec = dict(spec)
        spec["times"] = int(spec.get("times", 1))
        for field, cast in (("status", int), ("seconds", float), ("after_chunks", int),
                            ("interval", float)):
            if field in spec:
                cast(spec[field])  # reject bad numbers now, not with a 500 on the faulted request
        if "bytes" in spec:
            int(spec["bytes"])
        if spec["times"] == 0 or spec["times"] < -1:
            raise ValueError("times must be a positive int or -1")
        return spec

    # -- sending

    async def _deliver(self, reply: Reply, fault: dict | None, send, receive) -> None:
        kind = fault["kind"] if fault else None
        headers = reply.headers
        if reply.events is None:
            headers = [*headers, (b"content-length", str(len(reply.body)).encode())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if kind == "slow_first_byte" and await _idle(receive, float(fault.get("seconds", 1.0))):
            return

        if kind == "reset_mid_body":
            data = reply.body if reply.events is None else b"".join(reply.events)
            await send(
                {"type": "http.response.body", "body": data[: len(data) // 2], "more_body": True}
            )
            await _abort(send, receive, rst=False)
            return
        if reply.events is None:
            await send({"type": "http.response.body", "body": reply.body})
            return
        self.open_streams += 1
        how = "error"
        try:
            how = await self._stream(reply.events, kind, fault or {}, send, receive)
        finally:
            self.open_streams -= 1
            self.stream_closes.append({"at": time.time(), "how": how})

    @staticmethod
    async def _stream(events: list[bytes], kind: str | None, fault: dict, send, receive) -> str:
        """Send the events (with the stream fault's pause or pacing); how the stream ended:
        "complete", "cut" (the fault) or "disconnect" (the caller hung up during a wait)."""
        default = 1 if kind == "stream_slow" else 3
        cut = min(int(fault.get("after_chunks", default)), len(events) - 1) if kind in STREAM_FAULTS else -1
        for i, event in enumerate(events):
            if i == cut:
                if kind == "stream_cut":
                    await _abort(send, receive, rst=False)
                    return "cut"
                if kind == "stream_stall" and await _idle(receive, float(fault.get("seconds", 30.0))):
                    return "disconnect"
            if kind == "stream_slow" and i >= cut and await _idle(receive, float(fault.get("interval", 0.5))):
                return "disconnect"
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return "complete"

    async def _hostile(self, kind: str, fault: dict, path: str, send, receive) -> None:
        """An answer no gateway should hold: an endless line, an endless stream, a huge body
        (see the module docstring). Made piece by piece, each piece sent when the caller
        takes it (the server's flow control), so the mock's memory stays flat."""
        seconds = float(fault.get("seconds", 120.0))
        size = int(fault.get("bytes", 1 << 30)) if kind == "huge_body" else -1
        if kind == "huge_body":
            headers = [_JSON_CT]
            if fault.get("length", True) is not False:
                headers.append((b"content-length", str(size).encode()))
            first = b'{"id":"chatcmpl-huge","object":"chat.completion","choices":[{"index":0,' \
                    b'"message":{"role":"assistant","content":"'
            piece = b"x" * HOSTILE_PIECE
        else:
            headers = _SSE_HEADERS
            first, piece = _hostile_stream(kind, path)
        gone = asyncio.ensure_future(_until_disconnect(receive))
        started, sent, how = time.monotonic(), 0, "timeout"
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            body = first[:size] if size >= 0 else first
            while True:
                if gone.done():
                    how = "disconnect"
                    break
                if time.monotonic() - started > seconds:
                    break
                await send({"type": "http.response.body", "body": body, "more_body": True})
                sent += len(body)
                if 0 <= size <= sent:
                    how = "complete"
                    break
                body = piece[:size - sent] if size >= 0 else piece
                await asyncio.sleep(0)  # the disconnect, when there is one, is seen at once
            if how != "disconnect":
                await send({"type": "http.response.body", "body": b""})
        finally:
            gone.cancel()
            self.hostile_log.append({"kind": kind, "bytes": sent, "how": how,
                                     "seconds": round(time.monotonic() - started, 3)})

    # -- provider endpoints

    def _route(self, method: str, path: str, headers: dict, body: Any) -> Reply:
        anthropic = path.startswith("/v1/messages")
        if path == "/v1/models":
            if method != "GET":
                return _error(405, f"method {method} not allowed", False)
            data = [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"}
                for m in MODEL_IDS
            ]
            return _json_reply(200, {"object": "list", "data": data})
        handler = {
            "/v1/chat/completions": self._chat,
            "/v1/embeddings": self._embeddings,
            "/v1/messages": self._messages,
            "/v1/responses": self._responses,
            "/v1/moderations": self._moderations,
            "/v1/images/generations": self._images,
            "/v1/audio/speech": self._speech,
            "/v1/audio/transcriptions": self._transcriptions,
        }.get(path)
        if _WORKERS_AI.match(path):
            handler = self._workers_ai
        if handler is None:
            return _error(404, f"unknown path {path}", anthropic)
        if method != "POST":
            return _error(405, f"method {method} not allowed", anthropic)
        if body is _INVALID:
            return _error(400, "request body is not valid JSON", anthropic)
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object", anthropic)
        return handler(headers, body)

    def _chat(self, headers: dict, body: dict) -> Reply:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty array", False)
        model = str(body.get("model") or "mock-model")
        stream = body.get("stream") is True
        opts = body.get("stream_options")
        include_usage = stream and isinstance(opts, dict) and opts.get("include_usage") is True
        if self.fixed or headers.get("x-mock-fixed") == "1":
            return self._fixed_chat(model, stream, include_usage)

        tools = body.get("tools")
        last_text = _text(_last_user(messages).get("content"))
        last_is_user = isinstance(messages[-1], dict) and messages[-1].get("role") == "user"
        if isinstance(tools, list) and tools and isinstance(tools[0], dict) and last_is_user \
                and _WEATHER.search(last_text):
            name = str((tools[0].get("function") or {}).get("name", "tool"))
            return _chat_tool_reply(f"chatcmpl-mock-{next(self._seq)}", model, name, stream, include_usage)
        if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
            last_text = _text(messages[-1].get("content"))  # answer the tool's result
        content = "echo: " + last_text
        prompt = sum(_words(_text(m.get("content"))) for m in messages if isinstance(m, dict))
        completion = _words(content)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return _chat_reply(
            f"chatcmpl-mock-{next(self._seq)}",
            int(time.time()),
            model,
            content,
            usage,
            stream,
            include_usage,
            _WORDS.findall(content),
        )

    def _fixed_chat(self, model: str, stream: bool, include_usage: bool) -> Reply:
        # Benchmarks: bodies are built once per (model, mode) and then served from the cache.
        key = (model, stream, include_usage)
        reply = self._fixed_cache.get(key)
        if reply is None:
            pieces = [f"bench-token-{i:02d} " for i in range(19)] + ["bench-token-19."]
            usage = {"prompt_tokens": 42, "completion_tokens": 20, "total_tokens": 62}
            reply = _chat_reply(
                "chatcmpl-mock-fixed",
                1700000000,
                model,
                "".join(pieces),
                usage,
                stream,
                include_usage,
                pieces,
            )
            if len(self._fixed_cache) > 256:
                self._fixed_cache.clear()
            self._fixed_cache[key] = reply
        return reply

    def _embeddings(self, headers: dict, body: dict) -> Reply:
        inp = body.get("input")
        if isinstance(inp, str) or (
            isinstance(inp, list) and inp and all(isinstance(x, int) for x in inp)
        ):
            items = [inp]  # one string, or one token array
        elif isinstance(inp, list) and inp:
            items = inp
        else:
            return _error(400, "'input' must be a string or a non-empty array", False)
        b64 = body.get("encoding_format") == "base64"  # the openai SDK asks for base64 by default
        data = []
        for i, item in enumerate(items):
            vec: Any = _embedding(item, str(body.get("model") or ""))
            if b64:
                vec = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vec})
        tokens = sum(_words(x) if isinstance(x, str) else len(x) for x in items)
        return _json_reply(
            200,
            {
                "object": "list",
                "data": data,
                "model": str(body.get("model") or "mock-embed"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _moderations(self, headers: dict, body: dict) -> Reply:
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        if not inputs or inputs == [None]:
            return _error(400, "'input' is required", False)
        results = []
        for item in inputs:
            flagged = "kill" in (item if isinstance(item, str) else json.dumps(item)).lower()
            results.append({"flagged": flagged,
                            "categories": {c: flagged and c == "violence" for c in MODERATION_CATEGORIES},
                            "category_scores": {c: 0.9 if flagged and c == "violence" else 0.001
                                                for c in MODERATION_CATEGORIES}})
        return _json_reply(200, {"id": f"modr-mock-{next(self._seq)}", "model": str(body.get("model")),
                                 "results": results})

    def _images(self, headers: dict, body: dict) -> Reply:
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            return _error(400, "'prompt' is required", False)
        n = body.get("n") if isinstance(body.get("n"), int) else 1
        if body.get("response_format") == "b64_json":
            data = [{"b64_json": PNG_B64} for _ in range(n)]
        else:
            data = [{"url": f"http://mock-upstream.invalid/images/{next(self._seq)}.png"} for _ in range(n)]
        return _json_reply(200, {"created": int(time.time()), "data": data})

    def _speech(self, headers: dict, body: dict) -> Reply:
        if not isinstance(body.get("input"), str) or not body.get("voice"):
            return _error(400, "'input' and 'voice' are required", False)
        return Reply(200, [(b"content-type", b"audio/mpeg")],
                     events=speech_audio(body["input"], str(body["voice"])))

    def _transcriptions(self, headers: dict, body: dict) -> Reply:
        upload = body.get("file")
        if not isinstance(upload, dict) or not body.get("model"):
            return _error(400, "a multipart form with 'model' and a 'file' part is required", False)
        text = f"mock transcript of {upload['filename']}: {upload['size']} bytes, sha256 {upload['sha256'][:16]}"
        kind = body.get("response_format") or "json"
        if kind in ("text", "srt", "vtt"):
            return Reply(200, [(b"content-type", b"text/plain; charset=utf-8")], (text + "\n").encode())
        if kind == "verbose_json":
            return _json_reply(200, {"task": "transcribe", "language": body.get("language") or "english",
                                     "duration": 1.0, "text": text, "segments": []})
        return _json_reply(200, {"text": text})

    def _workers_ai(self, headers: dict, body: dict) -> Reply:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _json_reply(400, {"result": None, "success": False,
                                     "errors": [{"code": 5006, "message": "messages: required"}], "messages": []})
        text = "echo: " + _text(_last_user(messages).get("content"))
        prompt = sum(_words(_text(m.get("content"))) for m in messages if isinstance(m, dict))
        usage = {"prompt_tokens": prompt, "completion_tokens": _words(text),
                 "total_tokens": prompt + _words(text)}
        if body.get("stream") is not True:
            return _json_reply(200, {"result": {"response": text, "usage": usage}, "success": True,
                                     "errors": [], "messages": []})
        events = [_sse({"response": p, "p": "abcdef"}) for p in _WORDS.findall(text)]
        events += [_sse({"response": "", "usage": usage}), b"data: [DONE]\n\n"]
        return Reply(200, list(_SSE_HEADERS), events=events)

    def _responses(self, headers: dict, body: dict) -> Reply:
        """OpenAI's Responses API: echoes the last user text (the number of input items
        too, so a test sees what history reached it), streamed as typed events."""
        items = body.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        if not isinstance(items, list) or not items:
            return _error(400, "'input' must be a string or a non-empty array", False)
        users = [i for i in items if isinstance(i, dict) and i.get("role") == "user"]
        text = _text(users[-1].get("content")) if users else ""
        n = next(self._seq)
        rid, mid = f"resp_mock{n}", f"msg_mock{n}"
        content = f"echo: {text} [items={len(items)}]"
        usage = {"input_tokens": _words(text), "output_tokens": _words(content),
                 "total_tokens": _words(text) + _words(content)}
        part = {"type": "output_text", "text": content, "annotations": []}
        item = {"type": "message", "id": mid, "status": "completed", "role": "assistant", "content": [part]}
        response = {"id": rid, "object": "response", "created_at": int(time.time()), "status": "completed",
                    "model": str(body.get("model") or "mock"), "output": [item], "usage": usage,
                    "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
                    "incomplete_details": None, "instructions": body.get("instructions"), "metadata": {}}
        if body.get("stream") is not True:
            return _json_reply(200, response)
        seq = itertools.count()

        def ev(kind: str, **data: Any) -> bytes:
            return f"event: {kind}\n".encode() + _sse({"type": kind, "sequence_number": next(seq), **data})

        events = [ev("response.created", response={**response, "status": "in_progress", "output": []}),
                  ev("response.output_item.added", output_index=0, item={**item, "status": "in_progress",
                                                                         "content": []}),
                  ev("response.content_part.added", item_id=mid, output_index=0, content_index=0,
                     part={**part, "text": ""})]
        events += [ev("response.output_text.delta", item_id=mid, output_index=0, content_index=0, delta=w)
                   for w in _WORDS.findall(content)]
        events += [ev("response.output_text.done", item_id=mid, output_index=0, content_index=0, text=content),
                   ev("response.content_part.done", item_id=mid, output_index=0, content_index=0, part=part),
                   ev("response.output_item.done", output_index=0, item=item),
                   ev("response.completed", response=response)]
        return Reply(200, list(_SSE_HEADERS), events=events)

    def _messages(self, headers: dict, body: dict) -> Reply:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "messages: must be a non-empty array", True)
        model = str(body.get("model") or "claude-mock")
        n = next(self._seq)
        last = _last_user(messages).get("content")
        input_tokens = _words(_text(body.get("system"))) + sum(
            _words(_text(m.get("content")) or _tool_results_text(m.get("content")))
            for m in messages
            if isinstance(m, dict)
        )
        tools = body.get("tools")
        if (
            isinstance(tools, list)
            and tools
            and isinstance(tools[0], dict)
            and _WEATHER.search(_text(last))
        ):
            args = {"city": "Paris"}
            block = {
                "type": "tool_use",
                "id": f"toolu_mock_{n}",
                "name": str(tools[0].get("name", "tool")),
                "input": args,
            }
            stop, output_tokens = "tool_use", _words(json.dumps(args))
            js = json.dumps(args)
            deltas = [
                {"type": "input_json_delta", "partial_json": p}
                for p in (js[: len(js) // 2], js[len(js) // 2 :])
            ]
            start_block = {**block, "input": {}}
        else:
            text = "echo: " + (_text(last) or _tool_results_text(last))
            block = {"type": "text", "text": text}
            stop, output_tokens = "end_turn", _words(text)
            deltas = [{"type": "text_delta", "text": p} for p in _WORDS.findall(text)]
            start_block = {"type": "text", "text": ""}

        message = {
            "id": f"msg_mock_{n}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
        if body.get("stream") is not True:
            return _json_reply(200, message)
        started = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        }
        events = [
            {"type": "message_start", "message": started},
            {"type": "content_block_start", "index": 0, "content_block": start_block},
            *({"type": "content_block_delta", "index": 0, "delta": d} for d in deltas),
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
            {"type": "message_stop"},
        ]
        return Reply(200, list(_SSE_HEADERS), events=[_anthropic_sse(e) for e in events])


def _chat_tool_reply(cid: str, model: str, name: str, stream: bool, include_usage: bool) -> Reply:
    """An OpenAI tool call {"city": "Paris"}; streamed as the id/name chunk, then argument pieces."""
    args = json.dumps({"city": "Paris"})
    usage = {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    call = {"id": f"call_{cid[-6:]}", "type": "function", "function": {"name": name, "arguments": args}}
    base = {"id": cid, "created": int(time.time()), "model": model, "system_fingerprint": "fp_mock"}
    if not stream:
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return _json_reply(200, {**base, "object": "chat.completion", "usage": usage, "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}]})

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return _sse({**base, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    first = {"index": 0, "id": call["id"], "type": "function", "function": {"name": name, "arguments": ""}}
    pieces = [args[: len(args) // 2], args[len(args) // 2 :]]
    events = [
        chunk({"role": "assistant", "content": None, "tool_calls": [first]}),
        *(chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces),
        chunk({}, "tool_calls"),
    ]
    if include_usage:
        events.append(_sse({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return Reply(200, list(_SSE_HEADERS), events=events)


def _chat_reply(
    cid: str,
    created: int,
    model: str,
    content: str,
    usage: dict,
    stream: bool,
    include_usage: bool,
    pieces: list[str],
) -> Reply:
    if not stream:
        return _json_reply(
            200,
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )
    extra = {"usage": None} if include_usage else {}  # as OpenAI does when include_usage is on

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
                **extra,
            }
        )

    events = [
        chunk({"role": "assistant"}),
        *(chunk({"content": p}) for p in pieces),
        chunk({}, "stop"),
    ]
    if include_usage:
        events.append(
            _sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_mock",
                    "choices": [],
                    "usage": usage,
                }
            )
        )
    events.append(b"data: [DONE]\n\n")
    return Reply(200, list(_SSE_HEADERS), events=events)


app = MockUpstreamApp()  # module-level default, e.g. `uvicorn tests.support.mock_upstream:app`


# -------------------- CLI


def main(argv: list[str] | None = None) -> None:
    import uvicorn  # server-only; keeps importing MockUpstreamProcess light

    parser = argparse.ArgumentParser(
        description="Mock OpenAI/Anthropic upstream for tests and benchmarks"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--loop", default="auto", help="uvicorn loop (auto|asyncio|uvloop)")
    parser.add_argument("--http", default="auto", help="uvicorn http protocol (auto|h11|httptools)")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--fixed", action="store_true", help="answer every chat completion with the fixed reply"
    )
    args = parser.parse_args(argv)
    app.fixed = args.fixed

    # Bind ourselves: --port 0 then yields one known port (uvicorn may bind v4+v6 separately).
    family = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"

    class ReadyServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started and not self.should_exit:  # the listening socket is live now
                print(f"{READY_PREFIX} {url}", flush=True)

    config = uvicorn.Config(
        app,
        loop=args.loop,
        http=args.http,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    ReadyServer(config).run(sockets=[sock])


# -------------------- test helper


class MockUpstreamProcess:
    """The mock CLI as a subprocess.

    ``with MockUpstreamProcess() as m: httpx.get(m.url("/v1/models"))``; see the module docstring.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        extra_args: list[str] | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--host",
            host,
            "--port",
            str(port),
            *(extra_args or []),
        ]
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.base_url = ""
        self._client = None

    def __enter__(self) -> MockUpstreamProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        import httpx

        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
        )
        lines: queue.Queue[str | None] = queue.Queue()
        # A reader thread keeps draining stdout, so a chatty child can never block on a full pipe.
        threading.Thread(target=self._pump, args=(self.proc.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        try:
            while True:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                if line is None:
                    raise RuntimeError(f"mock upstream exited early (rc={self.proc.wait()})")
                if line.startswith(READY_PREFIX + " "):
                    self.base_url = line.split()[1]
                    break
        except queue.Empty:
            self.close()
            raise RuntimeError(f"mock upstream not ready within {self.startup_timeout}s") from None
        except BaseException:
            self.close()
            raise
        self._client = httpx.Client(base_url=self.base_url, timeout=10)

    @staticmethod
    def _pump(stream, lines: queue.Queue) -> None:
        with stream:
            for line in stream:
                lines.put(line.rstrip("\n"))
        lines.put(None)

    def url(self, path: str) -> str:
        return self.base_url + path

    def stats(self) -> dict:
        r = self._client.get("/_mock/stats")
        r.raise_for_status()
        return r.json()

    def reset(self) -> None:
        self._client.post("/_mock/reset").raise_for_status()

    def add_faults(self, faults: list[dict] | dict) -> dict:
        r = self._client.post("/_mock/faults", json=faults)
        r.raise_for_status()
        return r.json()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    main()
