"""Client CPU of one limiter call over Redis, one at a time and concurrent (batched).

    .venv/bin/python -m bench.redis_limiter [--calls 3200]

Starts its own redis-server; every call is an ``acquire`` of two request-count policies on
one partition (as a chat request with the default policy and one more), against the
in-process limiter as the baseline. CPU is this process's (``time.process_time``), so
redis-server's share is not in it.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time

from bench.procs import free_port
from flaregate.clock import SystemClock
from flaregate.hosts.local.redis_backend import RedisRateLimiterClient, connect
from flaregate.ratelimits.limiter import RateLimiter

CHECKS = [
    {"key": "bench", "cost": 1.0, "policy": {"name": "bench", "algorithm": "sliding_window", "unit": "requests",
                                             "limit": 1e9, "window_seconds": 60}},
    {"key": "default", "cost": 1.0, "policy": {"name": "default", "algorithm": "token_bucket", "unit": "requests",
                                               "limit": 1e9, "refill_per_second": 1e6}},
]


async def _over_redis(url: str, calls: int, concurrency: int) -> float:
    redis = connect(url)
    limiter = RedisRateLimiterClient(redis)

    async def loop(count: int) -> None:
        for _ in range(count):
            await limiter.acquire("key:bench", CHECKS)

    await loop(200)  # warm: connections, script cache
    start = time.process_time()
    await asyncio.gather(*(loop(calls // concurrency) for _ in range(concurrency)))
    used = time.process_time() - start
    await redis.aclose()
    return 1e6 * used / (calls // concurrency * concurrency)


def _in_process(calls: int) -> float:
    limiter = RateLimiter.in_memory(SystemClock())
    start = time.process_time()
    for _ in range(calls):
        limiter.partition("key:bench").acquire(CHECKS)
    return 1e6 * (time.process_time() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3200)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH (apt-get install redis-server)")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        redis = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            print(f"in-process limiter: {_in_process(args.calls):.0f} µs CPU per call")
            for concurrency in (1, 8, 32):
                cpu = asyncio.run(_over_redis(f"redis://127.0.0.1:{port}/0", args.calls, concurrency))
                print(f"over Redis, {concurrency:>2} concurrent: {cpu:.0f} µs client CPU per call")
        finally:
            redis.terminate()
            redis.wait(10)


if __name__ == "__main__":
    main()
