"""Realtime sessions through the gateway: latency added per message, CPU per relayed frame,
CPU per minute of an audio session, and many concurrent sessions with memory per session.

- latency: one session; ``--messages`` times a ``conversation.item.create`` and the wait for
  its ``conversation.item.added`` (client -> provider -> client through the mock), through
  the gateway and straight to the mock; the added latency is the difference of the medians
  (and of the p99s).
- CPU per frame: the server's process-tree CPU (utime + stime of it and its children, from
  /proc) over those round trips, divided by the frames relayed (1 up, 2 down per round trip).
- audio: one response with ``output_modalities: ["audio"]`` to a long text: the mock sends two
  frames per word (an audio delta and its transcript delta); CPU per frame, and per minute of
  a session at ``--audio-rate`` frames a second.
- close: the client closes mid-response; ms until the mock sees the provider's socket closed
  (its stats are polled every 2 ms, so this is an upper bound).
- concurrency: ``--sessions`` sessions opened at once (standalone server only), each asking
  one response, then held open; RSS before and with them open, per session.

    .venv/bin/python bench/realtime_bench.py [--messages 500] [--sessions 100] [--edge]

``--edge`` runs the latency and CPU parts against the Worker under ``wrangler dev``: CPU of the
whole tree (wrangler's node proxy included) and of the workerd process alone (the audio figure
is workerd's). Not part of the test suite: it prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.conftest import (  # noqa: E402
    GATEWAY_KEY,
    run_edge_gateway,
    run_local_gateway,
    upstream_env,
)
from tests.support.mock_upstream import MockUpstreamProcess  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.extend(_children(int(entry.name)))
    return found


def cpu_seconds(pid: int, only: str | None = None) -> float:
    """CPU of ``pid`` and its descendants (only those whose name is ``only``, if given)."""
    total = 0
    for p in _children(pid):
        try:
            if only is not None and Path(f"/proc/{p}/comm").read_text().strip() != only:
                continue
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def item(text: str) -> str:
    return json.dumps({"type": "conversation.item.create",
                       "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})


async def _recv_until(ws: Any, kind: str) -> int:
    frames = 0
    while True:
        frames += 1
        if json.loads(await ws.recv())["type"] == kind:
            return frames


async def round_trips(url: str, headers: dict[str, str], count: int) -> list[float]:
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await _recv_until(ws, "session.created")
        times = []
        for i in range(count):
            started = time.perf_counter()
            await ws.send(item(f"ping {i}"))
            await _recv_until(ws, "conversation.item.added")
            times.append((time.perf_counter() - started) * 1000)
            await _recv_until(ws, "conversation.item.done")
        return times


async def audio_frames(url: str, headers: dict[str, str], words: int) -> int:
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await _recv_until(ws, "session.created")
        await ws.send(item(" ".join(f"w{i}" for i in range(words))))
        await ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["audio"]}}))
        return await _recv_until(ws, "response.done")


async def close_propagation(url: str, headers: dict[str, str], mock: MockUpstreamProcess, rounds: int) -> float:
    """Median ms from the client's close (mid-response) to the mock seeing its socket closed."""
    times = []
    for _ in range(rounds):
        mock.add_faults({"kind": "realtime_slow", "interval": 0.2})
        before = len(mock.stats()["realtime"])
        ws = await websockets.connect(url, additional_headers=headers, max_size=None)
        await _recv_until(ws, "session.created")
        await ws.send(item("one two three four five six seven eight"))
        await ws.send(json.dumps({"type": "response.create"}))
        await _recv_until(ws, "response.output_text.delta")
        started = time.perf_counter()
        await ws.close()
        for _ in range(5000):  # at most 10 s
            if len(mock.stats()["realtime"]) != before:
                break
            await asyncio.sleep(0.002)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def concurrent(url: str, headers: dict[str, str], count: int, pid: int) -> dict[str, float]:
    before = rss_bytes(pid)
    sockets = []
    for _ in range(count):
        ws = await websockets.connect(url, additional_headers=headers, max_size=None)
        sockets.append(ws)
    await asyncio.gather(*(_recv_until(ws, "session.created") for ws in sockets))
    started = time.perf_counter()
    for i, ws in enumerate(sockets):
        await ws.send(item(f"hello {i}"))
        await ws.send(json.dumps({"type": "response.create"}))
    await asyncio.gather(*(_recv_until(ws, "response.done") for ws in sockets))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.5)
    held = rss_bytes(pid)
    for ws in sockets:
        await ws.close()
    return {"sessions": count, "all_answered_s": round(elapsed, 3), "rss_before_mb": round(before / 2**20, 1),
            "rss_open_mb": round(held / 2**20, 1), "per_session_kb": round((held - before) / count / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--audio-words", type=int, default=1000)
    parser.add_argument("--audio-rate", type=float, default=25.0, help="audio frames per second of a session")
    parser.add_argument("--edge", action="store_true", help="the Worker under wrangler dev (no concurrency part)")
    args = parser.parse_args()
    results: dict[str, Any] = {"host": "edge" if args.edge else "local"}
    with MockUpstreamProcess() as mock, tempfile.TemporaryDirectory() as tmp:
        env = upstream_env(mock.base_url, REALTIME_MAX_SESSIONS_PER_KEY=str(args.sessions + 10),
                           RATE_LIMIT_CAPACITY="100000", RATE_LIMIT_REFILL_PER_SECOND="100000",
                           REALTIME_MAX_MESSAGES_PER_SECOND="100000")
        runner = run_edge_gateway if args.edge else run_local_gateway
        with runner(Path(tmp), env) as server:
            auth = {"authorization": f"Bearer {GATEWAY_KEY}"}
            via = server.base_url.replace("http://", "ws://") + "/v1/realtime?model=gpt-test"
            direct = mock.base_url.replace("http://", "ws://") + "/v1/realtime?model=gpt-test"
            asyncio.run(round_trips(via, auth, 20))  # warm-up
            straight = asyncio.run(round_trips(direct, {}, args.messages))
            pid = server.process.pid
            cpu0, runtime0 = cpu_seconds(pid), cpu_seconds(pid, "workerd")
            through = asyncio.run(round_trips(via, auth, args.messages))
            cpu1, runtime1 = cpu_seconds(pid), cpu_seconds(pid, "workerd")
            frames = args.messages * 3
            results["latency_ms"] = {
                "direct_p50": round(statistics.median(straight), 3), "gateway_p50": round(statistics.median(through), 3),
                "added_p50": round(statistics.median(through) - statistics.median(straight), 3),
                "added_p99": round(p(through, 0.99) - p(straight, 0.99), 3)}
            results["cpu_us_per_frame"] = round((cpu1 - cpu0) / frames * 1e6, 1)
            if args.edge:  # workerd alone, without wrangler's node proxy in front of it
                results["workerd_cpu_us_per_frame"] = round((runtime1 - runtime0) / frames * 1e6, 1)
            cpu0, runtime0 = cpu_seconds(pid), cpu_seconds(pid, "workerd")
            relayed = asyncio.run(audio_frames(via, auth, args.audio_words))
            cpu1, runtime1 = cpu_seconds(pid), cpu_seconds(pid, "workerd")
            per_frame = (cpu1 - cpu0) / relayed
            if args.edge:
                per_frame = (runtime1 - runtime0) / relayed  # the isolate's host, not the dev harness
            results["audio"] = {"frames": relayed, "cpu_us_per_frame": round(per_frame * 1e6, 1),
                                "cpu_ms_per_minute": round(per_frame * args.audio_rate * 60 * 1000, 1),
                                "rate_frames_per_s": args.audio_rate}
            results["client_close_to_provider_close_ms_p50"] = asyncio.run(close_propagation(via, auth, mock, 5))
            if not args.edge:
                results["concurrency"] = asyncio.run(concurrent(via, auth, args.sessions, server.process.pid))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
