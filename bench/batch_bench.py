"""``python -m bench.batch_bench [--lines 10000] [--concurrency 16] [--target local|edge]``:
a chat batch run by the gateway against the same requests sent interactively.

Each phase runs in a fresh server (the built-in mock provider answers, so the figures are
the gateway's): N chat completions sent at ``--concurrency`` over HTTP, then one batch of N
lines with ``BATCH_CONCURRENCY`` the same. Reported: lines per second and server CPU per
line for each, their ratio (the issue's target: batch CPU per line <= 1.2x interactive),
and the server's peak RSS during the batch at each size in ``--rss-sizes`` (a fresh
process per size, so VmHWM is that batch's). On the edge only wall time is measured (the
runtime's CPU is workerd's, shared with wrangler); keep the size small there."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

from .procs import cpu_seconds, peak_rss_mb, process_tree
from .request_logs_through import GATEWAY_KEY, _server

CHAT = "/v1/chat/completions"


def _body(i: int, run: str) -> dict:
    return {"model": "mock-1", "max_tokens": 16, "messages": [{"role": "user", "content": f"{run} line {i}"}]}


async def _interactive(base: str, count: int, concurrency: int, run: str) -> None:
    todo = iter(range(count))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in todo:
            answer = await client.post(CHAT, headers={"authorization": f"Bearer {GATEWAY_KEY}"}, json=_body(i, run))
            assert answer.status_code == 200, answer.text

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))


def _batch(base: str, count: int, run: str) -> float:
    """Seconds from the batch's creation to its completion (the upload is not counted)."""
    client = openai.OpenAI(base_url=base + "/v1", api_key=GATEWAY_KEY, max_retries=2, timeout=120)
    data = b"".join(json.dumps({"custom_id": f"{run}-{i}", "method": "POST", "url": CHAT,
                                "body": _body(i, run)}).encode() + b"\n" for i in range(count))
    source = client.files.create(file=("bench.jsonl", io.BytesIO(data)), purpose="batch")
    started = time.perf_counter()
    batch = client.batches.create(input_file_id=source.id, endpoint=CHAT, completion_window="24h")
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    elapsed = time.perf_counter() - started
    assert batch.status == "completed" and batch.request_counts.completed == count, batch
    return elapsed


def _server_pids() -> list[int]:
    """The local server's processes: this bench's descendants (the one server it started)."""
    return [pid for pid in process_tree(os.getpid()) if pid != os.getpid()]


def _phase(target: str, kind: str, count: int, concurrency: int) -> dict:
    run = f"{kind}{time.time_ns()}"
    extra = {"BATCH_CONCURRENCY": str(concurrency), "BATCH_MAX_SHARE": "1.0", "FILES_MAX_BYTES": str(1 << 30)}
    with tempfile.TemporaryDirectory() as work, _server(target, Path(work), extra) as base:
        pids = _server_pids() if target == "local" else []
        cpu_before = cpu_seconds(pids)
        started = time.perf_counter()
        if kind == "interactive":
            asyncio.run(_interactive(base, count, concurrency, run))
            elapsed = time.perf_counter() - started
        else:
            elapsed = _batch(base, count, run)
        cpu = cpu_seconds(pids) - cpu_before
        return {"kind": kind, "lines": count, "seconds": round(elapsed, 3), "lines_per_s": round(count / elapsed, 1),
                "cpu_ms_per_line": round(cpu * 1000 / count, 3) if pids else None,
                "peak_rss_mb": round(peak_rss_mb(pids), 1) if pids else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--target", choices=("local", "edge"), default="local")
    parser.add_argument("--rss-sizes", default="1000,10000", help="batch sizes whose peak RSS is reported")
    args = parser.parse_args()
    interactive = _phase(args.target, "interactive", args.lines, args.concurrency)
    batch = _phase(args.target, "batch", args.lines, args.concurrency)
    report: dict = {"target": args.target, "concurrency": args.concurrency, "interactive": interactive,
                    "batch": batch}
    if interactive["cpu_ms_per_line"] and batch["cpu_ms_per_line"]:
        report["batch_cpu_per_line_ratio"] = round(batch["cpu_ms_per_line"] / interactive["cpu_ms_per_line"], 3)
    report["batch_lines_per_s_ratio"] = round(interactive["lines_per_s"] / batch["lines_per_s"], 3)
    if args.target == "local":
        report["peak_rss_mb"] = {size: _phase("local", "batch", int(size), args.concurrency)["peak_rss_mb"]
                                 for size in args.rss_sizes.split(",") if size.strip()}
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
