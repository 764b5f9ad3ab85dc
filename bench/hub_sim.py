"""The metrics hub's shards under K isolates' publishes, simulated over the core objects.

    .venv/bin/python -m bench.hub_sim [--rate 2000] [--seconds 2] [--isolates 10,100,1000] [--shards 1,4]
    .venv/bin/python -m bench.hub_sim --limiter     # and the hottest object: bench.limiter_sim's key

Not a test (not in CI). Requests arrive evenly at ``--rate`` over ``--seconds`` of simulated
time, each at one of K isolates chosen at random. Each isolate batches as ``Analytics``
does (``ANALYTICS_BATCH_SIZE`` 50 or ``ANALYTICS_BATCH_DELAY_MS`` 400 after the batch's
first event, whichever comes first) and publishes through its own ``ShardedHub`` client
(round robin from a random start) to N real ``MetricsHub`` objects over the local host's
SQLite port (one file each, as one Durable Object each on the edge). Every publish is
really executed; reported per (K, N):

- publishes (object calls) per second per shard: the mean, and the busiest shard's busiest
  simulated second, against the ~1 000 requests/s one Durable Object serves;
- the hub's CPU per publish (``time.process_time`` around ``MetricsHub.record``) and per
  event (timing: provisional on a shared machine);
- the merged answers' latency over the N shards (``/v1/analytics``, ``/metrics``, one
  ``/v1/logs`` page), in process: no RPC, so this is the merge and the shards' SQL only;
- bytes per request-log record (SQLite pages / rows) and per rollup event.

Under ``wrangler dev`` every object runs in one process on this machine's cores, so the
edge cannot show an object's ceiling; these figures are what the capacity model
(docs/capacity.md) is worked from.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.request_logs import NoAlarm, QuietBroadcaster
from flaregate.hosts.local.storage import SqliteStorage
from flaregate.hub.aggregator import MetricsHub
from flaregate.hub.shards import InProcessShard, ShardedHub

START = 1_800_000_000.0
BATCH_SIZE, BATCH_DELAY = 50, 0.4


class _SimClock:
    def __init__(self) -> None:
        self.t = START

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


class _TimedShard(InProcessShard):
    """A shard that counts its publishes per simulated second and the CPU each took."""

    def __init__(self, hub: MetricsHub, clock: _SimClock) -> None:
        super().__init__(hub)
        self.clock = clock
        self.per_second: Counter[int] = Counter()
        self.cpu: list[float] = []
        self.events = 0

    async def publish(self, events: list[dict[str, Any]]) -> None:
        self.per_second[int(self.clock.t - START)] += 1
        self.events += len(events)
        began = time.process_time()
        await self.hub.record(events)
        self.cpu.append(time.process_time() - began)


def _event(i: int, ts: float, rng: random.Random) -> dict[str, Any]:
    status = 200 if rng.random() > 0.02 else 502
    return {"ts": ts, "request_id": f"req_{i:024x}", "trace_id": f"{rng.getrandbits(128):032x}",
            "span_id": f"{rng.getrandbits(64):016x}", "parent_span_id": None, "path": "/v1/chat/completions",
            "status": status, "model": rng.choice(["gpt-4o-mini", "claude-haiku", "llama-3"]),
            "provider": rng.choice(["openai", "anthropic", "workers-ai"]), "cache": "MISS", "stream": False,
            "key_id": f"key_{rng.randrange(50):016x}", "attempts": 1, "failovers": 0, "upstream_status": status,
            "tokens_in": rng.randrange(20, 900), "tokens_out": rng.randrange(10, 400),
            "latency_ms": round(rng.uniform(80, 2500), 3), "upstream_ms": round(rng.uniform(70, 2400), 3),
            "overhead_ms": round(rng.uniform(0.5, 4), 3), "cost_usd": round(rng.uniform(0, 0.002), 9),
            "error_class": None if status == 200 else "upstream_5xx",
            "upstream_attempts": [["openai", status == 200]],
            "phases": {"auth": 0.01, "parse": 0.02, "route": 0.005, "ratelimit": 0.03, "upstream": 1.2}}


async def _run(rate: float, seconds: float, isolates: int, shards: int, seed: int, work: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    clock = _SimClock()
    hubs = [MetricsHub(SqliteStorage(work / f"shard-{i}.sqlite3"), clock, QuietBroadcaster(), NoAlarm())  # type: ignore[arg-type]
            for i in range(shards)]
    timed = [_TimedShard(hub, clock) for hub in hubs]
    clients = [ShardedHub(list(timed)) for _ in range(isolates)]
    buffers: list[list[dict[str, Any]]] = [[] for _ in range(isolates)]
    first: list[float | None] = [None] * isolates
    total = int(rate * seconds)
    for i in range(total):
        clock.t = START + i / rate
        for index in range(isolates):  # batches whose delay has passed go first
            began = first[index]
            if began is not None and clock.t - began >= BATCH_DELAY:
                batch, buffers[index], first[index] = buffers[index], [], None
                await clients[index].publish(batch)
        index = rng.randrange(isolates)
        buffers[index].append(_event(i, clock.t, rng))
        if first[index] is None:
            first[index] = clock.t
        if len(buffers[index]) >= BATCH_SIZE:
            batch, buffers[index], first[index] = buffers[index], [], None
            await clients[index].publish(batch)
    clock.t = START + seconds
    for index in range(isolates):
        if buffers[index]:
            await clients[index].publish(buffers[index])
    reader = ShardedHub(list(timed))
    merged: dict[str, list[float]] = {"analytics": [], "prometheus": [], "logs_page": []}
    for _ in range(3):
        for name, call in (("analytics", lambda: reader.analytics(None)), ("prometheus", reader.prometheus),
                           ("logs_page", lambda: reader.logs({"limit": "50"}))):
            began = time.perf_counter()
            await call()
            merged[name].append((time.perf_counter() - began) * 1000)
    analytics = await reader.analytics("1h")
    assert analytics["windows"]["1h"]["requests"] == total, "the merged count must be every request"
    calls = [sum(s.per_second.values()) / seconds for s in timed]
    cpu = [c for s in timed for c in s.cpu]
    log_bytes = _log_bytes(work, shards)
    return {
        "isolates": isolates, "shards": shards, "requests": total,
        "publishes_per_s_per_shard": round(statistics.mean(calls), 1),
        "busiest_shard_second": max(max(s.per_second.values(), default=0) for s in timed),
        "events_per_publish": round(total / max(1, sum(len(s.cpu) for s in timed)), 1),
        "cpu_ms_per_publish": round(1000 * statistics.mean(cpu), 3) if cpu else None,
        "cpu_us_per_event": round(1e6 * sum(cpu) / total, 1),
        "merged_ms": {name: round(statistics.median(values), 2) for name, values in merged.items()},
        "log_bytes_per_record": log_bytes,
    }


def _log_bytes(work: Path, shards: int) -> float | None:
    total = rows = 0
    for i in range(shards):
        with contextlib.closing(sqlite3.connect(work / f"shard-{i}.sqlite3")) as conn:
            pages = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
            total += sum(v for k, v in pages.items() if k.startswith("log_request"))
            rows += conn.execute("SELECT COUNT(*) FROM log_request").fetchone()[0]
    return round(total / rows, 1) if rows else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hub_sim", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=2000, help="requests per second, all isolates")
    parser.add_argument("--seconds", type=float, default=2.0, help="simulated seconds")
    parser.add_argument("--isolates", default="10,100,1000")
    parser.add_argument("--shards", default="1,4")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limiter", action="store_true",
                        help="also run bench.limiter_sim: one key at 10 000 requests/s under leases")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for isolates in (int(k) for k in args.isolates.split(",")):
        for shards in (int(n) for n in args.shards.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                results.append(asyncio.run(_run(args.rate, args.seconds, isolates, shards, args.seed, Path(tmp))))
            r = results[-1]
            if not args.json:
                print(f"K={isolates:>5} N={shards:>3}: {r['publishes_per_s_per_shard']:>7} publishes/s/shard "
                      f"(busiest second {r['busiest_shard_second']}), {r['events_per_publish']} events/publish, "
                      f"CPU {r['cpu_ms_per_publish']} ms/publish, {r['cpu_us_per_event']} us/event; merged "
                      f"analytics {r['merged_ms']['analytics']} ms, metrics {r['merged_ms']['prometheus']} ms, "
                      f"logs {r['merged_ms']['logs_page']} ms; {r['log_bytes_per_record']} B/record", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    if args.limiter:
        from bench import limiter_sim

        limiter_sim.main(["--isolates", "1,100,1000"])  # 5 simulated seconds: past the leases' warm-up
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
