"""A small HTTP/1.1 keep-alive client for SSE streams: time to first byte and to ``[DONE]``.

wrk measures whole responses only, so streams get this client: raw asyncio sockets (uvloop
when installed), no HTTP library in the measured path, chunked decoding by hand.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field


@dataclass
class StreamRun:
    ttfb: list[float] = field(default_factory=list)  # seconds to the first body byte
    total: list[float] = field(default_factory=list)  # seconds to the `data: [DONE]` event
    non_2xx: int = 0
    errors: int = 0
    incomplete: int = 0  # 200 responses that ended without [DONE]
    elapsed: float = 0.0


def _request(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_body(reader: asyncio.StreamReader, head: bytes, on_data) -> None:
    """Read one response body (chunked or content-length), calling on_data for each piece."""
    lowered = head.lower()
    if b"transfer-encoding: chunked" in lowered:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # end of (empty) trailers
                return
            on_data(await reader.readexactly(size))
            await reader.readexactly(2)
    for line in lowered.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            remaining = int(line.split(b":", 1)[1])
            while remaining > 0:
                piece = await reader.read(min(remaining, 65536))
                if not piece:
                    raise ConnectionError("connection closed mid-body")
                remaining -= len(piece)
                on_data(piece)
            return
    while piece := await reader.read(65536):  # no framing: until the server closes
        on_data(piece)
    raise ConnectionError("connection closed")


async def _worker(url_host: str, port: int, path: str, headers: dict[str, str], run_id: str,
                  worker: int, deadline: float, max_requests: int, out: StreamRun) -> None:
    reader = writer = None
    for n in itertools.count():
        if time.perf_counter() >= deadline or n >= max_requests:
            break
        body = json.dumps({"model": "bench-model", "stream": True, "messages": [
            {"role": "user", "content": f"Benchmark prompt {run_id}-{worker}-{n}"}]}).encode()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(url_host, port)
            started = time.perf_counter()
            writer.write(_request(url_host, port, path, headers, body))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            seen = {"first": None, "done": None, "tail": b""}

            def on_data(piece: bytes, seen=seen) -> None:
                now = time.perf_counter()
                if seen["first"] is None:
                    seen["first"] = now
                window = seen["tail"] + piece
                if seen["done"] is None and b"data: [DONE]" in window:
                    seen["done"] = now
                seen["tail"] = window[-16:]

            await _read_body(reader, head, on_data)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
            out.errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
            continue
        if status != 200:
            out.non_2xx += 1
        elif seen["done"] is None or seen["first"] is None:
            out.incomplete += 1
        else:
            out.ttfb.append(seen["first"] - started)
            out.total.append(seen["done"] - started)
        if b"connection: close" in head.lower():
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def run_streams(host: str, port: int, path: str, headers: dict[str, str], connections: int,
                      seconds: float, run_id: str, max_requests: int = 100_000) -> StreamRun:
    out = StreamRun()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(
        _worker(host, port, path, headers, run_id, i, deadline, max_requests, out) for i in range(connections)
    ))
    out.elapsed = time.perf_counter() - started
    return out


def measure_streams(host: str, port: int, path: str, headers: dict[str, str], connections: int,
                    seconds: float, run_id: str) -> StreamRun:
    try:
        import uvloop  # type: ignore[import-not-found]

        return uvloop.run(run_streams(host, port, path, headers, connections, seconds, run_id))
    except ImportError:
        return asyncio.run(run_streams(host, port, path, headers, connections, seconds, run_id))
