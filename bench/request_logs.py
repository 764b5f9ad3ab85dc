"""Request-log store figures: records written per second over the local host's sqlite file,
and the CPU the log store adds to the hub's ingest of one request (bodies off), against the
same hub without it, in the same run; the same for the exporters' intake and for kept bodies.

    .venv/bin/python -m bench.request_logs [--events 20000] [--batch 50]
    .venv/bin/python -m bench.request_logs --through local|edge [--requests 3000]

``--through`` runs the real server (``flaregate serve``, or the Worker under ``wrangler dev``
with its Durable Object hub) and sends requests at a fixed concurrency: records per second
is how fast the records of those requests become readable in ``/v1/logs`` (first request to
last record), beside the request rate itself. Through a server the store can only be as fast
as the requests that feed it, so that figure is a lower bound; the store alone is above.

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
from flaregate.config import settings_from_vars
from flaregate.hosts.local.storage import SqliteStorage
from flaregate.http import Response
from flaregate.hub import aggregator as hub_module
from flaregate.hub.aggregator import MetricsHub
from flaregate.hub.request_logs import RequestLogStore
from flaregate.observability.export import build_exporters
from flaregate.observability.request_bodies import BodyLog


class QuietBroadcaster:
    """A hub broadcaster with no subscribers (benches drive the hub without /ws)."""

    def broadcast(self, text: str) -> None: ...

    def subscriber_count(self) -> int:
        return 0


class NoAlarm:
    """A hub scheduler that never wakes it (benches call the hub's work directly)."""

    async def schedule(self, at: float) -> None: ...


def _event(i: int, now: float) -> dict:
    return {"ts": now, "request_id": f"req_{i:024x}", "trace_id": f"{i:032x}", "path": "/v1/chat/completions",
            "status": 200 if i % 10 else 502, "model": "gpt-4o-mini", "provider": "openai", "key_id": "key_a1b2",
            "latency_ms": 123.4, "upstream_ms": 110.0, "overhead_ms": 13.4, "ttft_ms": 50.0, "cache": "MISS",
            "tokens_in": 120, "tokens_out": 48, "cost_usd": 0.00012, "stream": bool(i % 2),
            "upstream_attempts": [["openai", i % 10 != 0]], "error_class": None if i % 10 else "upstream_5xx",
            "phases": {"auth": 0.2, "route": 0.1, "upstream": 110.0}}


def _hub(path: Path, exporters: bool = False) -> MetricsHub:
    # Exporters configured but never woken (no alarm here): this measures their intake only.
    settings = settings_from_vars({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "DD_API_KEY": "bench"})
    return MetricsHub(SqliteStorage(path), SystemClock(), QuietBroadcaster(), NoAlarm(),
                      exporters=build_exporters(settings, None, SystemClock()) if exporters else None)  # type: ignore[arg-type]


def _bodies_cpu(events: int) -> float:
    """CPU per request that LOG_BODIES=both adds on the request's path (copy and cap)."""
    bodies = BodyLog("both", 16_384)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise this paragraph. " * 20}]}
    answer = b'{"id":"chatcmpl-1","choices":[{"message":{"role":"assistant","content":"' + b"x" * 600 + b'"}}]}'
    start = time.process_time()
    for _ in range(events):
        event: dict = {"path": "/v1/chat/completions"}
        bodies.keep_request(body, event, False)
        bodies.keep_response(event, Response(200, {}, answer))
        bodies.finish(event)
    return (time.process_time() - start) / events * 1e6


async def _ingest(hub: MetricsHub, events: list[dict], batch: int) -> float:
    start = time.process_time()
    for i in range(0, len(events), batch):
        await hub.record(events[i:i + batch])
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)  # ANALYTICS_BATCH_SIZE's default
    parser.add_argument("--through", choices=("local", "edge"), help="through the real server instead")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--export-down", action="store_true",
                        help="with --through: exporters off vs. their targets down, same traffic")
    args = parser.parse_args()
    if args.through:
        from .request_logs_through import export_down, run

        (export_down if args.export_down else run)(args.through, args.requests, args.concurrency)
        return
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
        exporting = asyncio.run(_ingest(_hub(Path(tmp) / "export.sqlite3", exporters=True), events, args.batch))
    per_with, per_without = with_logs / args.events * 1e6, without / args.events * 1e6
    per_export = exporting / args.events * 1e6
    print(f"hub ingest CPU/request: {per_without:.1f} us without logs, {per_with:.1f} us with logs"
          f" (+{per_with - per_without:.1f} us, x{per_with / per_without:.2f}); request path: +0 (logged in the hub)")
    print(f"hub ingest CPU/request with the OTLP + Datadog exporters' intake: {per_export:.1f} us"
          f" (+{per_export - per_with:.1f} us over logs alone; encoding and sending happen on the hub's wake-up)")
    print(f"LOG_BODIES=both on the request path: +{_bodies_cpu(args.events):.1f} us CPU/request"
          " (a ~0.5 KiB request and answer); secrets are redacted in the hub")


if __name__ == "__main__":
    main()
