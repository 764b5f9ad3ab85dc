"""Cache-hit latency per tier vs cache-miss latency through the real server, in one run.

Starts the mock upstream and the gateway three times: with every tier (hits come from the
hot, in-process tier), with the hot tier off (hits from the warm tier) and with hot and warm
off (hits from the cold tier). It sends interleaved requests over one keep-alive connection:
misses (a new prompt each time, so every one goes upstream) and hits (one prompt, answered
from cache; each hit's ``Cache-Status`` must name the expected tier). Prints client-observed
latency and the gateway's own ``server-timing`` total, p50/p99, and the miss/hit ratios.

    .venv/bin/python bench/cache_latency.py [--requests 300] [--upstream-delay-ms 0] [--stream]

Locally the warm tier is the SQLite ``kv_warm`` table and cold the ``kv`` table. With
``FLAREGATE_TARGET=edge`` the gateway is the Worker under ``wrangler dev`` (offline workerd,
as the tests run it): warm is the runtime's Cache API, cold its local KV simulation.

The mock upstream answers in about a millisecond, so by default the miss column is the
gateway's work plus one local round trip; pass --upstream-delay-ms to model a real provider.
Not part of the test suite: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.conftest import GATEWAY_KEY, TARGET, run_gateway, upstream_env  # noqa: E402
from tests.support.mock_upstream import MockUpstreamProcess  # noqa: E402

CHAT = "/v1/chat/completions"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def server_total(response: httpx.Response) -> float:
    for part in response.headers.get("server-timing", "").split(","):
        name, _, duration = part.strip().partition(";dur=")
        if name == "total":
            return float(duration)
    return float("nan")


def timed(client: httpx.Client, body: dict, stream: bool) -> tuple[float, float, str, str]:
    started = time.perf_counter()
    if stream:
        with client.stream("POST", CHAT, json=body) as response:
            for _ in response.iter_bytes():
                pass
    else:
        response = client.post(CHAT, json=body)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:300]!r}")
    tier = response.headers.get("cache-status", "").rpartition("detail=")[2]
    return elapsed, server_total(response), response.headers.get("x-flaregate-cache", "?"), tier


def measure(base_url: str, requests: int, stream: bool, want_misses: bool,
            tier: str) -> dict[str, dict[str, list[float]]]:
    auth = {"authorization": f"Bearer {GATEWAY_KEY}"}
    hot = {"model": "gpt-test", "stream": stream, "messages": [{"role": "user", "content": "the same question"}]}
    samples: dict[str, dict[str, list[float]]] = {"MISS": {"client": [], "server": []},
                                                 "HIT": {"client": [], "server": []}}
    with httpx.Client(base_url=base_url, headers=auth, timeout=30) as client:
        for _ in range(20):  # warm-up: connection, imports, the hot entry
            timed(client, hot, stream)
            timed(client, {**hot, "messages": [{"role": "user", "content": uuid.uuid4().hex}]}, stream)
        for _ in range(requests):  # interleaved, so drift affects both columns alike
            if want_misses:
                cold = {**hot, "messages": [{"role": "user", "content": f"question {uuid.uuid4().hex}"}]}
                client_ms, server_ms, status, _ = timed(client, cold, stream)
                assert status == "MISS", status
                samples["MISS"]["client"].append(client_ms)
                samples["MISS"]["server"].append(server_ms)
            client_ms, server_ms, status, served_by = timed(client, hot, stream)
            assert status == "HIT" and served_by == tier, (status, served_by)
            samples["HIT"]["client"].append(client_ms)
            samples["HIT"]["server"].append(server_ms)
    return samples


def row(label: str, values: dict[str, list[float]]) -> str:
    c, s = values["client"], values["server"]
    return (f"{label:<22} {len(c):>5} {percentile(c, .5):>9.2f} {percentile(c, .99):>9.2f} "
            f"{statistics.fmean(c):>9.2f} {percentile(s, .5):>11.2f} {percentile(s, .99):>11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests per column")
    parser.add_argument("--upstream-delay-ms", type=float, default=0.0, help="added to every upstream answer")
    parser.add_argument("--stream", action="store_true", help="streaming requests (SSE) instead of JSON")
    args = parser.parse_args()

    with MockUpstreamProcess() as upstream, tempfile.TemporaryDirectory() as tmp:
        if args.upstream_delay_ms:
            upstream.add_faults({"kind": "delay", "seconds": args.upstream_delay_ms / 1000, "path": CHAT,
                                 "times": -1})
        env = upstream_env(upstream.base_url, LOG_LEVEL="warning", CACHE_TTL_SECONDS="300")
        tiers = {"hot": {}, "warm": {"CACHE_HOT_TTL_SECONDS": "0"},
                 "cold": {"CACHE_HOT_TTL_SECONDS": "0", "CACHE_WARM_TTL_SECONDS": "0"}}
        samples = {}
        for tier, extra in tiers.items():
            with run_gateway(Path(tmp) / tier, {**env, **extra}) as server:
                samples[tier] = measure(server.base_url, args.requests, args.stream, True, tier)  # same load each run

    shape = "stream (SSE)" if args.stream else "JSON"
    host = "edge (wrangler dev)" if TARGET == "edge" else "local server"
    print(f"Flaregate cache latency, {host} + mock upstream, {shape}, "
          f"upstream delay {args.upstream_delay_ms:g} ms, milliseconds")
    print(f"{'':<22} {'n':>5} {'p50':>9} {'p99':>9} {'mean':>9} {'server p50':>11} {'server p99':>11}")
    misses = samples["hot"]["MISS"]
    print(row("miss (upstream call)", misses))
    for tier in tiers:
        print(row(f"hit, {tier} tier", samples[tier]["HIT"]))
    for tier in tiers:
        hits = samples[tier]["HIT"]["client"]
        print(f"miss/hit ratio ({tier}): p50 {percentile(misses['client'], .5) / percentile(hits, .5):.2f}x, "
              f"p99 {percentile(misses['client'], .99) / percentile(hits, .99):.2f}x")


if __name__ == "__main__":
    main()
