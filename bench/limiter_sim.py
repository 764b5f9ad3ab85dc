"""One busy key's rate-limiter partition, simulated: K isolates at 10 000 requests/s.

    .venv/bin/python -m bench.limiter_sim [--rate 10000] [--seconds 5] [--isolates 1,10,100,1000]

Not a test (not in CI): a discrete-event simulation on a fake clock. Each isolate is the
gateway's own ``Limits`` (the lease book and the admission code as they run in a Worker
isolate); all of them call one ``RateLimiter`` object over the local host's SQLite port
(``SqliteStorage(":memory:")``), as one Durable Object per partition does on the edge. A
call to the object takes ``--rpc-ms`` of simulated time each way, so requests that arrive
while an isolate's lease call is in flight behave as they would (they ask for their own
units). Requests arrive evenly at ``--rate``, each at an isolate chosen at random, hold
their reservation for ``--upstream-ms`` and then settle their real token usage.

Scenarios (the key's partition holds the ``default`` token bucket and these):

- ``far``: a request rate (fixed window, 10x the offered rate) beside a token limit (also
  10x): leases can be large, the question is how many object calls are left.
- ``over``: a fixed window allowing 60% of what is offered in the run (30 000 of 50 000 at
  the defaults; the window outlasts the run): the object's grants shrink to single units
  near the limit, then isolates repeat its refusals; admitted must never pass the limit.
- ``bucket``: a token bucket of half a second's requests refilled at 60% of the rate: a
  sustained overload, where the bucket is always nearly empty; admitted must never pass
  capacity + refill x run.

Each runs with the default (adaptive) leases and with ``lease: 0`` (one call per request).
Reported: the object's calls per second (mean after the first lease lifetime, and the
busiest second), calls per request, admitted against the limit. One object serves about
1 000 calls/s: a partition is hot above that.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import random
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flaregate.accounting import Usage
from flaregate.config import settings_from_vars
from flaregate.hosts.local.storage import SqliteStorage
from flaregate.http import Headers, Request
from flaregate.ratelimits.enforcer import Limits
from flaregate.ratelimits.leases import LEASE_SECONDS
from flaregate.ratelimits.limiter import RateLimiter
from flaregate.security.access import Principal

START = 1_800_000_000.0  # a multiple of every window below: windows start with the run
BODY = {"model": "sim", "max_tokens": 50, "messages": [{"role": "user", "content": "x" * 40}]}
REAL = Usage(15, 30)  # a little under the estimate (about 12 + 50 tokens)


class SimClock:
    def __init__(self) -> None:
        self.t = START

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t - START + 1000.0


class Sim:
    """Simulated time for coroutines: ``sleep`` parks a flow until the driver reaches its
    time; the driver runs every flow that can run before moving the clock on."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self._events: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self.active = 0  # flows running (not parked)

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._events, (self.clock.t + seconds, self._seq, future))
        self.active -= 1
        await future

    async def _settle(self) -> None:
        # Yield until every flow has parked or finished: no event could say "all of them".
        while self.active > 0:  # noqa: ASYNC110
            await asyncio.sleep(0)

    async def run(self, arrivals: list[float], start: Callable[[], Any]) -> None:
        pending: list[asyncio.Task[Any]] = []
        i = 0
        while i < len(arrivals) or self._events:
            if i < len(arrivals) and (not self._events or arrivals[i] <= self._events[0][0]):
                self.clock.t = max(self.clock.t, arrivals[i])
                i += 1
                self.active += 1
                pending.append(asyncio.ensure_future(self._flow(start())))
            else:
                when, _, future = heapq.heappop(self._events)
                self.clock.t = max(self.clock.t, when)
                self.active += 1
                future.set_result(None)
            await self._settle()
        await asyncio.gather(*pending)

    async def _flow(self, job: Any) -> None:
        try:
            await job
        finally:
            self.active -= 1


class SimClient:
    """The rate-limiter client of every isolate: one object per partition over one SQLite
    table (as the local host), each call ``rpc`` seconds of simulated time each way."""

    def __init__(self, sim: Sim, rpc: float) -> None:
        self._sim, self._rpc = sim, rpc
        self._limiter = RateLimiter(SqliteStorage(":memory:"), sim.clock)
        self.calls: Counter[int] = Counter()  # by second of the run

    async def _call(self, name: str, method: str, *args: Any) -> Any:
        await self._sim.sleep(self._rpc)
        self.calls[int(self._sim.clock.t - START)] += 1
        answer = getattr(self._limiter.partition(name), method)(*args)
        await self._sim.sleep(self._rpc)
        return answer

    async def check(self, key: str, policy: dict[str, Any], cost: float) -> dict[str, Any]:
        return self._limiter.check(key, policy, cost)

    async def acquire(self, name: str, checks: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._call(name, "acquire", checks)

    async def reconcile(self, name: str, adjustments: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._call(name, "reconcile", adjustments)

    async def usage(self, name: str) -> dict[str, Any]:
        return await self._call(name, "usage")

    async def reset(self, name: str, policy: str = "") -> dict[str, Any]:
        return await self._call(name, "reset", policy)


class NoAnalytics:
    def record(self, event: Any) -> None:
        pass


@dataclass
class Result:
    scenario: str
    isolates: int
    lease: str
    offered: int
    admitted: int
    limit: int | None
    calls: int
    mean_per_s: float
    peak_per_s: int


SCENARIOS: dict[str, Callable[[float, float], tuple[list[dict[str, Any]], int | None]]] = {
    "far": lambda rate, seconds: ([
        {"name": "rpm", "algorithm": "fixed_window", "limit": rate * 600, "window_seconds": 60},
        {"name": "tpm", "algorithm": "fixed_window", "unit": "tokens", "limit": rate * 600 * 100,
         "window_seconds": 60}], None),
    "over": lambda rate, seconds: ([
        {"name": "burst", "algorithm": "fixed_window", "limit": int(rate * seconds * 0.6),
         "window_seconds": 100 * seconds}], int(rate * seconds * 0.6)),
    "bucket": lambda rate, seconds: ([
        {"name": "burst", "algorithm": "token_bucket", "limit": int(rate * 0.5),
         "refill_per_second": rate * 0.6}], int(rate * 0.5 + rate * 0.6 * seconds)),
}


async def simulate(scenario: str, isolates: int, leasing: bool, rate: float, seconds: float, rpc: float,
                   upstream: float, seed: int) -> Result:
    clock = SimClock()
    sim = Sim(clock)
    client = SimClient(sim, rpc)
    policies, limit = SCENARIOS[scenario](rate, seconds)
    if not leasing:
        policies = [{**p, "lease": 0} for p in policies]
    vars = {"FLAREGATE_API_KEYS": "fg-sim", "FLAREGATE_RATE_LIMITS": json.dumps(policies),
            "RATE_LIMIT_CAPACITY": str(rate * 100), "RATE_LIMIT_REFILL_PER_SECOND": str(rate * 10)}
    if not leasing:
        vars["RATE_LIMIT_LEASE"] = "0"
    settings = settings_from_vars(vars)
    gateways = [Limits(settings, client, clock, NoAnalytics()) for _ in range(isolates)]  # type: ignore[arg-type]
    principal = Principal(key_id="key_sim", source="config")
    request = Request("POST", "/v1/chat/completions", Headers([("content-type", "application/json")]), b"",
                      client_ip="203.0.113.7")
    rnd = random.Random(seed)
    admitted = 0

    async def one() -> None:
        nonlocal admitted
        limits = gateways[rnd.randrange(isolates)]
        try:
            admission = await limits.admit(request, principal, "sim", BODY, {}, {})
        except Exception:
            return  # 429
        admitted += 1
        await sim.sleep(upstream)
        await admission.settle(REAL, "upstream", "sim")

    count = int(rate * seconds)
    arrivals = [START + i / rate for i in range(count)]
    await sim.run(arrivals, one)
    steady = [client.calls.get(s, 0) for s in range(int(LEASE_SECONDS), int(seconds))]
    return Result(scenario, isolates, "adaptive" if leasing else "0", count, admitted, limit,
                  sum(client.calls.values()), sum(steady) / max(1, len(steady)), max(client.calls.values()))


def table(results: list[Result]) -> str:
    head = (f"{'scenario':8} {'isolates':>8} {'lease':>8} {'offered':>8} {'admitted':>8} {'limit':>7} "
            f"{'calls/s':>8} {'peak/s':>7} {'calls/req':>9}")
    rows = [head, "-" * len(head)]
    for r in results:
        rows.append(f"{r.scenario:8} {r.isolates:>8} {r.lease:>8} {r.offered:>8} {r.admitted:>8} "
                    f"{r.limit if r.limit is not None else '-':>7} {r.mean_per_s:>8.0f} {r.peak_per_s:>7} "
                    f"{r.calls / r.offered:>9.3f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=10_000, help="requests per second to the one key")
    parser.add_argument("--seconds", type=float, default=5.0, help="simulated seconds")
    parser.add_argument("--isolates", default="1,10,100,1000")
    parser.add_argument("--scenarios", default="far,over,bucket")
    parser.add_argument("--rpc-ms", type=float, default=2.0, help="one way, per object call")
    parser.add_argument("--upstream-ms", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    results = []
    for scenario in args.scenarios.split(","):
        for isolates in (int(k) for k in args.isolates.split(",")):
            for leasing in (True, False):
                result = asyncio.run(simulate(scenario, isolates, leasing, args.rate, args.seconds,
                                              args.rpc_ms / 1000, args.upstream_ms / 1000, args.seed))
                if result.limit is not None and result.admitted > result.limit:
                    print(f"OVER THE LIMIT: {result}", file=sys.stderr)
                results.append(result)
                print(table(results[-1:]).splitlines()[-1], file=sys.stderr)
    print(table(results))
    return 0 if all(r.limit is None or r.admitted <= r.limit for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
