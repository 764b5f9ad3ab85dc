"""Throughput of `flaregate serve --workers 2` (Redis) against one process (SQLite, Redis).

    .venv/bin/python -m bench.replicas [--seconds 8] [--connections 32]

Each configuration serves the built-in mock model through a request-count limit high enough
never to refuse, so every request makes its rate-limit round trips. The load generator is
one aiohttp process (it shares the 2 cores with the gateway: the ratio between
configurations of the same run is the figure, not the absolute rate). CPU per request is the
gateway processes' CPU (from /proc) divided by the requests served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.procs import cpu_seconds, free_port, process_tree

KEY = "fg-bench-replicas-key-0123456789"


def _start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH (apt-get install redis-server)")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def _start_gateway(workdir: Path, redis_url: str | None, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLAREGATE_", "RATE_LIMIT", "CACHE_"))}
    env.update({"FLAREGATE_API_KEYS": KEY, "CACHE_TTL_SECONDS": "0", "LOG_LEVEL": "warning",
                "RATE_LIMIT_CAPACITY": str(10**9), "RATE_LIMIT_REFILL_PER_SECOND": str(10**6),
                "FLAREGATE_RATE_LIMITS": json.dumps([{"name": "bench", "algorithm": "sliding_window",
                                                      "limit": 10**9, "window_seconds": 60}])})
    if redis_url:
        env["FLAREGATE_REDIS_URL"] = redis_url
    proc = subprocess.Popen([sys.executable, "-m", "flaregate", "serve", "--port", str(port), "--data-dir",
                             str(workdir), "--no-admin-key", "--workers", str(workers)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


async def _load(url: str, seconds: float, connections: int) -> int:
    body = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {KEY}"}
    done = 0
    statuses: dict[int, int] = {}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
                if r.status == 200:
                    done += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections, force_close=False)) as s:
        for _ in range(100):  # until it answers
            try:
                async with s.get(url + "/health") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # every worker up
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(worker(s) for _ in range(connections)))
    if set(statuses) - {200}:
        print(f"  {url}: statuses {statuses}", file=sys.stderr)
    return done


def _measure(name: str, workdir: Path, redis_url: str | None, workers: int, seconds: float,
             connections: int) -> dict[str, float | str]:
    proc, url = _start_gateway(workdir / name, redis_url, workers)
    try:
        asyncio.run(_load(url, 1.0, connections))  # warm-up; also waits for readiness
        pids = process_tree(proc.pid)
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        served = asyncio.run(_load(url, seconds, connections))
        elapsed, cpu = time.monotonic() - t0, cpu_seconds(pids) - cpu0
    finally:
        proc.terminate()
        proc.wait(10)
    return {"config": name, "rps": served / elapsed, "cpu_us_per_request": 1e6 * cpu / max(served, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        redis, redis_url = _start_redis(workdir)
        try:
            rows = [
                _measure("1 process, SQLite", workdir, None, 1, args.seconds, args.connections),
                _measure("1 process, Redis", workdir, redis_url[:-1] + "1", 1, args.seconds, args.connections),
                _measure("--workers 2, Redis", workdir, redis_url[:-1] + "2", 2, args.seconds, args.connections),
            ]
        finally:
            redis.terminate()
            redis.wait(10)
    base = float(rows[0]["rps"])
    print(f"{'configuration':<22}{'req/s':>10}{'x SQLite':>10}{'gateway CPU µs/req':>20}")
    for row in rows:
        print(f"{row['config']:<22}{row['rps']:>10.0f}{float(row['rps']) / base:>10.2f}"
              f"{row['cpu_us_per_request']:>20.0f}")


if __name__ == "__main__":
    main()
