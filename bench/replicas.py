"""Throughput of `flaregate serve --workers 2` (Redis) against one process (SQLite, Redis).

    .venv/bin/python -m bench.replicas [--seconds 8] [--connections 32]

Each configuration serves the built-in mock model through a request-count limit high enough
never to refuse, so every request makes its rate-limit round trips. The load generator is
one aiohttp process (it shares the 2 cores with the gateway: the ratio between
configurations of the same run is the figure, not the absolute rate). CPU per request is the
gateway processes' CPU (from /proc) divided by the requests served; with Redis also
redis-server's CPU per request and the Redis commands per request (``INFO commandstats``).
"stored key" authenticates with a key made by ``flaregate keys create`` (one lookup per
request: over Redis they are not cached per process) instead of ``FLAREGATE_API_KEYS``.
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


def _gateway_env(redis_url: str | None, stored_key: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLAREGATE_", "RATE_LIMIT", "CACHE_"))}
    if not stored_key:
        env["FLAREGATE_API_KEYS"] = KEY
    if redis_url:
        env["FLAREGATE_REDIS_URL"] = redis_url
    return env


def _stored_key(workdir: Path, redis_url: str | None) -> str:
    """A key in the gateway's store (Redis or the data dir's SQLite), made by the CLI."""
    done = subprocess.run([sys.executable, "-m", "flaregate", "keys", "create", "--data-dir", str(workdir),
                           "--name", "bench"], env=_gateway_env(redis_url, True), capture_output=True, text=True,
                          check=True)
    return done.stdout.split()[1]


def _start_gateway(workdir: Path, redis_url: str | None, workers: int,
                   stored_key: bool = False) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = _gateway_env(redis_url, stored_key)
    env.update({"CACHE_TTL_SECONDS": "0", "LOG_LEVEL": "warning",
                "RATE_LIMIT_CAPACITY": str(10**9), "RATE_LIMIT_REFILL_PER_SECOND": str(10**6),
                "FLAREGATE_RATE_LIMITS": json.dumps([{"name": "bench", "algorithm": "sliding_window",
                                                      "limit": 10**9, "window_seconds": 60}])})
    proc = subprocess.Popen([sys.executable, "-m", "flaregate", "serve", "--port", str(port), "--data-dir",
                             str(workdir), "--no-admin-key", "--workers", str(workers)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


async def _load(url: str, seconds: float, connections: int, key: str) -> int:
    body = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {key}"}
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


def _redis_calls(redis_url: str) -> dict[str, int]:
    """Commands Redis has run, by name, since it started (``INFO commandstats``)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def _measure(name: str, workdir: Path, redis: tuple[subprocess.Popen, str] | None, db: int, workers: int,
             seconds: float, connections: int, stored_key: bool = False) -> dict[str, float | str]:
    redis_url = None if redis is None else redis[1][:-1] + str(db)
    data = workdir / name.replace(" ", "_").replace(",", "")
    data.mkdir(parents=True)
    key = _stored_key(data, redis_url) if stored_key else KEY
    proc, url = _start_gateway(data, redis_url, workers, stored_key)
    try:
        asyncio.run(_load(url, 1.0, connections, key))  # warm-up; also waits for readiness
        pids = process_tree(proc.pid)
        calls0 = _redis_calls(redis_url) if redis_url else {}
        redis_cpu0 = cpu_seconds([redis[0].pid]) if redis else 0.0
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        served = asyncio.run(_load(url, seconds, connections, key))
        elapsed, cpu = time.monotonic() - t0, cpu_seconds(pids) - cpu0
        redis_cpu = cpu_seconds([redis[0].pid]) - redis_cpu0 if redis else 0.0
        calls = {k: v - calls0.get(k, 0) for k, v in _redis_calls(redis_url).items()} if redis_url else {}
    finally:
        proc.terminate()
        proc.wait(10)
    per_request = {k: v / max(served, 1) for k, v in sorted(calls.items()) if k != "info" and v}
    return {"config": name, "rps": served / elapsed, "cpu_us_per_request": 1e6 * cpu / max(served, 1),
            "redis_cpu_us_per_request": 1e6 * redis_cpu / max(served, 1),
            "commands": ", ".join(f"{k} {v:.2f}" for k, v in per_request.items())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        redis = _start_redis(workdir)
        try:
            rows = [
                _measure("1 process, SQLite", workdir, None, 0, 1, args.seconds, args.connections),
                _measure("1 process, Redis", workdir, redis, 1, 1, args.seconds, args.connections),
                _measure("--workers 2, Redis", workdir, redis, 2, 2, args.seconds, args.connections),
                _measure("1 process, SQLite, stored key", workdir, None, 0, 1, args.seconds, args.connections,
                         stored_key=True),
                _measure("1 process, Redis, stored key", workdir, redis, 3, 1, args.seconds, args.connections,
                         stored_key=True),
            ]
        finally:
            redis[0].terminate()
            redis[0].wait(10)
    base = float(rows[0]["rps"])
    print(f"{'configuration':<32}{'req/s':>8}{'x SQLite':>10}{'gateway CPU µs/req':>20}{'redis CPU µs/req':>18}"
          "  Redis commands per request")
    for row in rows:
        print(f"{row['config']:<32}{row['rps']:>8.0f}{float(row['rps']) / base:>10.2f}"
              f"{row['cpu_us_per_request']:>20.0f}{row['redis_cpu_us_per_request']:>18.0f}  {row['commands']}")


if __name__ == "__main__":
    main()
