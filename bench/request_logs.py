"""Request-log store figures: records written per second over the local host's sqlite file,
and the CPU the log store adds to the hub's ingest of one request (bodies off), against the
same hub without it, in the same run.

    .venv/bin/python -m bench.request_logs [--events 20000] [--batch 50]

The record is written inside the metrics hub (the Durable Object on the edge), off the
request's path: the request itself pays nothing for it; this measures what the hub pays.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from flaregate.clock import SystemClock
from flaregate.hosts.local.storage import SqliteStorage
from flaregate.observability import hub as hub_module
from flaregate.observability.hub import MetricsHub
from flaregate.observability.request_logs import RequestLogStore


class _Quiet:
    def broadcast(self, text: str) -> None: ...

    def subscriber_count(self) -> int:
        return 0


class _NoAlarm:
    async def schedule(self, at: float) -> None: ...


def _event(i: int, now: float) -> dict:
    return {"ts": now, "request_id": f"req_{i:024x}", "trace_id": f"{i:032x}", "path": "/v1/chat/completions",
            "status": 200 if i % 10 else 502, "model": "gpt-4o-mini", "provider": "openai", "key_id": "key_a1b2",
            "latency_ms": 123.4, "upstream_ms": 110.0, "overhead_ms": 13.4, "ttft_ms": 50.0, "cache": "MISS",
            "tokens_in": 120, "tokens_out": 48, "cost_usd": 0.00012, "stream": bool(i % 2),
            "upstream_attempts": [["openai", i % 10 != 0]], "error_class": None if i % 10 else "upstream_5xx",
            "phases": {"auth": 0.2, "route": 0.1, "upstream": 110.0}}


def _hub(path: Path) -> MetricsHub:
    return MetricsHub(SqliteStorage(path), SystemClock(), _Quiet(), _NoAlarm())


async def _ingest(hub: MetricsHub, events: list[dict], batch: int) -> float:
    start = time.process_time()
    for i in range(0, len(events), batch):
        await hub.record(events[i:i + batch])
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)  # ANALYTICS_BATCH_SIZE's default
    args = parser.parse_args()
    now = time.time()
    events = [_event(i, now) for i in range(args.events)]
    with tempfile.TemporaryDirectory() as tmp:
        store = RequestLogStore(SqliteStorage(Path(tmp) / "store.sqlite3"))
        sql = store._sql
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(events), args.batch):
            transaction = getattr(sql, "transaction", None)
            assert transaction is not None
            with transaction():
                store.write(events[i:i + args.batch], [], now)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert store.count() == args.events
        print(f"store alone (sqlite file, batches of {args.batch}): {args.events / wall:,.0f} records/s wall,"
              f" {cpu / args.events * 1e6:.1f} us CPU/record")

        with_logs = asyncio.run(_ingest(_hub(Path(tmp) / "with.sqlite3"), events, args.batch))
        original = hub_module.MetricsHub._log
        hub_module.MetricsHub._log = lambda self, requests, operational, now: None  # type: ignore[method-assign]
        try:
            without = asyncio.run(_ingest(_hub(Path(tmp) / "without.sqlite3"), events, args.batch))
        finally:
            hub_module.MetricsHub._log = original  # type: ignore[method-assign]
    per_with, per_without = with_logs / args.events * 1e6, without / args.events * 1e6
    print(f"hub ingest CPU/request: {per_without:.1f} us without logs, {per_with:.1f} us with logs"
          f" (+{per_with - per_without:.1f} us, x{per_with / per_without:.2f}); request path: +0 (logged in the hub)")


if __name__ == "__main__":
    main()
