"""Overload with load shedding off and on: success rate and latency per priority class.

The mock upstream plays a saturated provider: every answer takes ``--delay-ms`` and at most
``--capacity`` are served at a time, the rest queue (its ``delay`` fault with ``capacity``).
``--high`` + ``--low`` client loops (10x the capacity by default) send chat completions for
``--seconds`` with ``x-flaregate-priority`` (trusted from configured keys). A refused request
waits ``--retry-pause-ms`` and tries again. The same load runs against the gateway with
``LOAD_SHEDDING`` off, then on; the figures are per priority class: requests, share
answered 200, share refused with 503 ``overloaded``, client timeouts, and the p50 / p99
latency of the successful ones and of all answers.

    .venv/bin/python bench/overload.py [--seconds 20] [--capacity 8] [--delay-ms 250]

``FLAREGATE_TARGET=edge`` runs the Worker under ``wrangler dev`` instead (as the tests do).
Not part of the test suite: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.conftest import GATEWAY_KEY, run_gateway, upstream_env  # noqa: E402
from tests.support.mock_upstream import MockUpstreamProcess  # noqa: E402

CHAT = "/v1/chat/completions"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def load(base_url: str, args: argparse.Namespace) -> dict[str, list[tuple[str, float]]]:
    results: dict[str, list[tuple[str, float]]] = {"high": [], "low": []}
    stop = time.monotonic() + args.seconds
    limits = httpx.Limits(max_connections=args.high + args.low + 8, max_keepalive_connections=args.high + args.low)
    async with httpx.AsyncClient(base_url=base_url, timeout=args.client_timeout, limits=limits,
                                 headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as client:
        async def loop(priority: str) -> None:
            while time.monotonic() < stop:
                body = {"model": "gpt-test", "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
                started = time.perf_counter()
                try:
                    response = await client.post(CHAT, json=body, headers={"x-flaregate-priority": priority})
                    outcome = str(response.status_code)
                except httpx.TimeoutException:
                    outcome = "timeout"
                except httpx.HTTPError:
                    outcome = "error"
                results[priority].append((outcome, (time.perf_counter() - started) * 1000))
                if outcome != "200":
                    await asyncio.sleep(args.retry_pause_ms / 1000)

        await asyncio.gather(*(loop("high") for _ in range(args.high)), *(loop("low") for _ in range(args.low)))
    return results


def report(label: str, results: dict[str, list[tuple[str, float]]], seconds: float) -> None:
    for priority, samples in results.items():
        n = len(samples)
        ok = [ms for outcome, ms in samples if outcome == "200"]
        shed = sum(1 for outcome, _ in samples if outcome == "503")
        timeouts = sum(1 for outcome, _ in samples if outcome == "timeout")
        every = [ms for _, ms in samples]
        print(f"{label:<13} {priority:<5} {n:>6} {len(ok) / seconds:>7.1f} {100 * len(ok) / max(n, 1):>6.1f}% "
              f"{100 * shed / max(n, 1):>6.1f}% {timeouts:>8} {percentile(ok, .5):>9.0f} {percentile(ok, .9):>9.0f} "
              f"{percentile(ok, .99):>9.0f} "
              f"{percentile(every, .99):>9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--capacity", type=int, default=8, help="answers the provider serves at a time")
    parser.add_argument("--delay-ms", type=float, default=250.0, help="each answer's time at the provider")
    parser.add_argument("--high", type=int, default=4, help="high-priority client loops")
    parser.add_argument("--low", type=int, default=76, help="low-priority client loops")
    parser.add_argument("--client-timeout", type=float, default=10.0)
    parser.add_argument("--retry-pause-ms", type=float, default=1000.0,
                        help="pause after a refused request (the Retry-After the gateway sends)")
    parser.add_argument("--slow-after", type=float, default=0.5,
                        help="SHED_SLOW_AFTER_SECONDS: answers slower than this shrink the limit")
    args = parser.parse_args()

    with MockUpstreamProcess() as upstream, tempfile.TemporaryDirectory() as tmp:
        upstream.add_faults({"kind": "delay", "seconds": args.delay_ms / 1000, "capacity": args.capacity,
                             "path": CHAT, "times": -1})
        env = upstream_env(upstream.base_url, LOG_LEVEL="warning", CACHE_TTL_SECONDS="0",
                           UPSTREAM_TIMEOUT_SECONDS="60", UPSTREAM_DEADLINE_SECONDS="60",
                           UPSTREAM_MAX_ATTEMPTS="1", RATE_LIMIT_CAPACITY="1000000",
                           RATE_LIMIT_REFILL_PER_SECOND="100000")
        runs = {}
        for label, extra in (("shedding off", {"LOAD_SHEDDING": "false"}),
                             ("shedding on", {"LOAD_SHEDDING": "true", "SHED_INITIAL_LIMIT": str(2 * args.capacity),
                                              "SHED_MIN_LIMIT": "2",
                                              "SHED_SLOW_AFTER_SECONDS": str(args.slow_after)})):
            with run_gateway(Path(tmp) / label.replace(" ", "-"), {**env, **extra}) as server:
                runs[label] = asyncio.run(load(server.base_url, args))
                limit = httpx.get(server.base_url + "/health").json().get("load_shedding", {}).get("limit")
                print(f"({label}: adaptive limit at the end: {limit})", file=sys.stderr)

    capacity_rps = args.capacity / (args.delay_ms / 1000)
    offered = args.high + args.low
    print(f"Overload: provider serves {args.capacity} at a time x {args.delay_ms:g} ms (= {capacity_rps:.0f} rps); "
          f"{args.high} high + {args.low} low client loops ({offered / args.capacity:.0f}x its concurrency), "
          f"{args.seconds:g} s per run, client timeout {args.client_timeout:g} s; latency in ms")
    print(f"{'':<13} {'class':<5} {'sent':>6} {'ok/s':>7} {'ok':>7} {'shed':>7} {'timeouts':>8} "
          f"{'ok p50':>9} {'ok p90':>9} {'ok p99':>9} {'all p99':>9}")
    for label, results in runs.items():
        report(label, results, args.seconds)


if __name__ == "__main__":
    main()
