#!/usr/bin/env python3
"""How many request events per second one metrics hub ingests (the core MetricsHub over a
local SQLite file, as the standalone server runs it; a Durable Object runs the same SQL).

    .venv/bin/python scripts/bench_hub.py [--events 20000] [--batch 50 1]

Prints figures; asserts nothing. Events vary over 3 providers x 4 models x 5 keys with
some errors, streams, cache hits and failovers, like real traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from flaregate.clock import SystemClock
from flaregate.hosts.local.storage import SqliteStorage
from flaregate.hub.aggregator import MetricsHub


class NoSubscribers:
    def broadcast(self, text: str) -> None:
        pass

    def subscriber_count(self) -> int:
        return 0


class NoAlarms:
    async def schedule(self, at: float) -> None:
        pass


def make_events(n: int, rng: random.Random) -> list[dict]:
    providers, models, keys = ["openai", "anthropic", "mock"], ["m1", "m2", "m3", "m4"], [f"key_{i}" for i in range(5)]
    events = []
    for _ in range(n):
        provider = rng.choice(providers)
        failed = rng.random() < 0.03
        stream = rng.random() < 0.3
        total = rng.lognormvariate(5, 1)
        events.append({
            "ts": time.time(), "status": 502 if failed else 200, "provider": provider, "model": rng.choice(models),
            "key_id": rng.choice(keys), "cache": rng.choice(["HIT", "MISS", "MISS", None]), "stream": stream,
            "latency_ms": total, "upstream_ms": total * 0.97, "ttft_ms": total * 0.2 if stream else None,
            "tokens_in": rng.randint(5, 500), "tokens_out": rng.randint(5, 500),
            "error_class": "upstream_error" if failed else None,
            "upstream_attempts": [["mock", False], [provider, True]] if rng.random() < 0.02 else [[provider, not failed]],
            "phases": {"parse": 0.1, "auth": 0.05, "ratelimit": 0.4, "cache": 0.3, "upstream": total * 0.97},
        })
    return events


async def run(batch: int, count: int, folder: Path) -> None:
    storage = SqliteStorage(folder / f"bench-{batch}.sqlite3")
    hub = MetricsHub(storage, SystemClock(), NoSubscribers(), NoAlarms())
    events = make_events(count, random.Random(batch))
    started = time.perf_counter()
    for start in range(0, count, batch):
        await hub.record(events[start:start + batch])
    elapsed = time.perf_counter() - started
    timings = {}
    for name, call in (("snapshot", hub.snapshot), ("analytics", hub.analytics), ("prometheus", hub.prometheus),
                       ("compact", hub.compact)):
        t = time.perf_counter()
        call()
        timings[name] = (time.perf_counter() - t) * 1000
    print(f"batch {batch:>4}: {count / elapsed:>9,.0f} events/s  ({elapsed / count * 1e6:6.1f} us/event)  "
          + "  ".join(f"{name} {ms:.1f} ms" for name, ms in timings.items()))
    storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[50, 10, 1])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for batch in args.batch:
            asyncio.run(run(batch, args.events, Path(folder)))


if __name__ == "__main__":
    main()
