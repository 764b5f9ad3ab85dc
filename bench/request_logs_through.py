"""``python -m bench.request_logs --through local|edge``: records per second through the real
server (see bench/request_logs.py). The built-in mock provider answers, so the figure is
the gateway's and the store's, not a provider's."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from .procs import free_port

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support import wrangler_dev  # noqa: E402

GATEWAY_KEY = "fg-bench-gateway-key"
ADMIN_KEY = "fg-bench-admin-key"
ENV = {"FLAREGATE_API_KEYS": GATEWAY_KEY, "FLAREGATE_ADMIN_KEY": ADMIN_KEY, "CACHE_TTL_SECONDS": "0",
       "RATE_LIMIT_CAPACITY": "1000000000", "RATE_LIMIT_REFILL_PER_SECOND": "1000000000", "LOG_LEVEL": "warn"}


@contextmanager
def _server(target: str, work: Path, extra: dict[str, str] | None = None) -> Iterator[str]:
    env = {**ENV, **(extra or {})}
    if target == "edge":
        env_file = wrangler_dev.write_env_file(work / "bench.env", env)
        command = wrangler_dev.wrangler_command(free_port(), free_port(), work / "state", env_file)
        dev = wrangler_dev.start(command, log_path=work / "wrangler.log", ready_timeout=180)
        try:
            yield dev.base_url
        finally:
            wrangler_dev.stop(dev.process)
        return
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLAREGATE_", "RATE_LIMIT", "CACHE_"))}
    with (work / "server.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "flaregate", "serve", "--port", str(port), "--data-dir",
                                    str(work)], env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(10)


async def _send(base: str, count: int, concurrency: int, run: str) -> list[float]:
    todo = iter(range(count))
    latencies: list[float] = []

    async def worker(client: httpx.AsyncClient) -> None:
        for i in todo:
            started = time.perf_counter()
            response = await client.post("/v1/chat/completions", headers={"authorization": f"Bearer {GATEWAY_KEY}"},
                                         json={"model": "mock-1", "messages": [{"role": "user", "content": f"{run} {i}"}]})
            assert response.status_code == 200, response.text
            latencies.append((time.perf_counter() - started) * 1000)

    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies


def _records(base: str, since: float) -> int:
    text = httpx.get(base + "/v1/logs", params={"format": "jsonl", "model": "mock-1", "since": str(since)},
                     headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=60).text
    return sum(1 for line in text.splitlines() if line.strip())


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def export_down(target: str, requests: int, concurrency: int, rounds: int = 3) -> None:
    """The same traffic with no exporter and with OTLP + Datadog pointed at a closed port,
    alternating, in one run: what a target that is down costs the API."""
    dead = f"http://127.0.0.1:{free_port()}"
    configs = {"exporters off": {}, "targets down": {"OTEL_EXPORTER_OTLP_ENDPOINT": dead, "DD_API_KEY": "bench",
                                                    "DATADOG_API_URL": dead, "OTEL_BSP_SCHEDULE_DELAY": "200"}}
    results: dict[str, list[float]] = {name: [] for name in configs}
    rates: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        try:
            stack = {name: _server(target, Path(tmp) / name.replace(" ", "-"), extra) for name, extra in configs.items()}
            for name, context in stack.items():
                (Path(tmp) / name.replace(" ", "-")).mkdir()
                servers[name] = context.__enter__()
                asyncio.run(_send(servers[name], 50, concurrency, "warm"))
            for _ in range(rounds):
                for name, base in servers.items():
                    start = time.perf_counter()
                    results[name] += asyncio.run(_send(base, requests, concurrency, "bench"))
                    rates[name].append(requests / (time.perf_counter() - start))
        finally:
            for name in servers:
                stack[name].__exit__(None, None, None)
    summary = {name: {"requests_per_s": round(sum(rates[name]) / len(rates[name]), 1),
                      "p50_ms": _quantile(values, 0.5), "p95_ms": _quantile(values, 0.95)}
               for name, values in results.items()}
    off, down = summary["exporters off"], summary["targets down"]
    summary["ratio_down_over_off"] = {k: round(down[k] / off[k], 3) for k in off}
    print(json.dumps({"target": target, "requests_per_round": requests, "rounds": rounds, **summary}))


def run(target: str, requests: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, _server(target, Path(tmp)) as base:
        asyncio.run(_send(base, 50, concurrency, "warm"))  # the isolate / process, the hub, the store
        since = time.time()
        start = time.perf_counter()
        asyncio.run(_send(base, requests, concurrency, "bench"))
        answered = time.perf_counter() - start
        while (found := _records(base, since)) < requests and time.perf_counter() - start < answered + 120:
            time.sleep(0.2)
        stored = time.perf_counter() - start
    print(json.dumps({"target": target, "requests": requests, "concurrency": concurrency,
                      "requests_per_s": round(requests / answered, 1), "records": found,
                      "records_per_s": round(found / stored, 1), "last_record_after_last_answer_s":
                      round(stored - answered, 2)}))
