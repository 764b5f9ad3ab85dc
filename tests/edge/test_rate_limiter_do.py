"""The RateLimiter Durable Object's limit methods under CPython over faked DO SQL: the same
decisions as the local host, and the Worker's limits going through one DO per partition."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

import entry
from durable_objects.rate_limiter import RateLimiter
from flaregate.hosts.edge import objects as edge_objects
from flaregate.hosts.local.runtime import LocalRateLimiterClient
from flaregate.ratelimits.limiter import RateLimiter as CoreRateLimiter
from flaregate.security.keys import key_id
from flaregate.security.signing import sign_request
from tests.support.fakes import FakeClock, MemorySql

from .conftest import API_KEY, DirectRpc, FakeCtx, FakeRequest, FakeResponse

POLICIES = {
    "b": {"name": "b", "algorithm": "token_bucket", "limit": 5, "refill_per_second": 0.5},
    "s": {"name": "s", "algorithm": "sliding_window", "limit": 4, "window_seconds": 30},
    "f": {"name": "f", "algorithm": "fixed_window", "limit": 3, "window_seconds": 10},
    "t": {"name": "t", "algorithm": "fixed_window", "unit": "tokens", "limit": 500, "window_seconds": 60},
    "d": {"name": "d", "algorithm": "fixed_window", "unit": "usd", "limit": 0.25, "calendar": "month"},
}
PARTITION = f"key:{key_id(API_KEY)}"


def script(seed: int, steps: int) -> list[tuple[str, Any]]:
    """A mixed sequence of calls, the same for both hosts."""
    rnd = random.Random(seed)
    calls: list[tuple[str, Any]] = []
    for _ in range(steps):
        kind = rnd.choice(["acquire"] * 5 + ["reconcile", "advance", "advance", "usage", "reset"])
        names = rnd.sample(sorted(POLICIES), rnd.randint(1, 3))
        if kind == "acquire":
            lease = rnd.choice([0, 0, 2, 40])  # requests' worth of a lease, as the isolates ask
            checks = [{"key": n, "policy": POLICIES[n], "lease": lease,
                       "cost": {"t": rnd.randint(1, 200), "d": rnd.randint(1, 90) / 1000}.get(n, 1)} for n in names]
            if rnd.random() < 0.3:  # an ended lease gives back what it did not spend
                back = rnd.choice(sorted(POLICIES))
                checks.append({"key": back, "policy": POLICIES[back], "cost": 0, "back": rnd.randint(1, 3),
                               "lent": rnd.randint(1, 6), "back_at": "AT"})
            calls.append((kind, checks))
        elif kind == "reconcile":
            calls.append((kind, [{"key": n, "policy": POLICIES[n], "delta": rnd.randint(-150, 150)} for n in names]))
        elif kind == "advance":
            calls.append((kind, rnd.choice([0.3, 2, 9, 31, 3600])))
        elif kind == "reset":
            calls.append((kind, rnd.choice(["", "b", "t"])))
        else:
            calls.append((kind, None))
    return calls


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_durable_object_decides_like_the_local_host(monkeypatch: pytest.MonkeyPatch, seed: int):
    clock = FakeClock()
    monkeypatch.setattr(edge_objects, "SystemClock", lambda: clock)
    ctx = FakeCtx()
    durable = DirectRpc(RateLimiter(ctx, None))
    local = LocalRateLimiterClient(CoreRateLimiter(MemorySql(), clock))
    outcomes = set()
    leases_lent = 0
    at = clock.now()
    for kind, arg in script(seed, 300):
        if kind == "advance":
            clock.advance(arg)
            continue
        if kind in ("acquire", "reconcile"):
            if kind == "reconcile":
                arg = [{**entry_, "at": at} for entry_ in arg]
            arg = [{**entry_, "back_at": at} if entry_.get("back_at") == "AT" else entry_ for entry_ in arg]
            from_do = getattr(durable, kind)(arg)
            from_local = await getattr(local, kind)(PARTITION, arg)
            at = from_do["at"]
            outcomes.add(from_do.get("allowed"))
            leases_lent += from_do.get("lease", 0)
        elif kind == "usage":
            from_do, from_local = durable.usage(), await local.usage(PARTITION)
        else:
            from_do, from_local = durable.reset(arg), await local.reset(PARTITION, arg)
        assert from_do == from_local, (kind, arg)
    assert {True, False} <= outcomes
    assert leases_lent
    # A new instance over the same storage (woken from hibernation) continues from the rows.
    assert DirectRpc(RateLimiter(ctx, None)).usage() == await local.usage(PARTITION)


BASE = "https://flaregate.example.workers.dev"


def chat(body: dict[str, Any], ip: str = "203.0.113.9") -> FakeRequest:
    headers = {"content-type": "application/json", "authorization": f"Bearer {API_KEY}", "cf-connecting-ip": ip}
    return FakeRequest("POST", f"{BASE}/v1/chat/completions", headers, json.dumps(body).encode())


async def call(env: Any, request: FakeRequest) -> FakeResponse:
    return await entry.Default(FakeCtx(), env).fetch(request)


async def test_the_worker_reserves_and_reconciles_in_one_durable_object_per_partition(make_env):
    limits = [
        {"name": "tpm", "algorithm": "sliding_window", "unit": "tokens", "limit": 5000, "window_seconds": 60},
        {"name": "per-net", "algorithm": "fixed_window", "limit": 2, "window_seconds": 3600, "scope": "ip"},
    ]
    env = make_env(FLAREGATE_RATE_LIMITS=json.dumps(limits), CACHE_TTL_SECONDS="0")
    body = {"model": "mock-1", "max_tokens": 700, "messages": [{"role": "user", "content": "count these words"}]}
    first, second = await call(env, chat(body)), await call(env, chat(body, ip="203.0.113.200"))
    used = second.json()["usage"]["total_tokens"]
    assert int(first.headers["x-ratelimit-remaining-tokens"]) - int(second.headers["x-ratelimit-remaining-tokens"]) == used
    third = await call(env, chat(body, ip="203.0.113.1"))  # the same /24: its third request
    assert third.status == 429 and '"per-net";r=0' in third.headers["ratelimit"]
    assert set(env.RATE_LIMITER.instances) == {PARTITION, "ip:203.0.113.0"}
    assert (await call(env, chat(body, ip="198.51.100.4"))).status == 200  # another network


async def test_the_worker_admin_reads_and_resets_a_key_through_its_durable_object(make_env):
    env = make_env(FLAREGATE_ADMIN_KEY="edge-admin", RATE_LIMIT_CAPACITY="3", RATE_LIMIT_REFILL_PER_SECOND="0.001")
    for _ in range(3):
        await call(env, chat({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}))
    path = f"/admin/ratelimits/{key_id(API_KEY)}"

    def admin(method: str, key: str = "edge-admin") -> FakeRequest:
        return FakeRequest(method, BASE + path, {"authorization": f"Bearer {key}",
                                                 **sign_request("edge-admin", method, path)})

    usage = await call(env, admin("GET"))
    assert usage.status == 200 and usage.json()["limits"][0]["used"] == 3
    reset = await call(env, admin("DELETE"))
    assert reset.json()["reset"] == 1
    assert (await call(env, admin("GET", key="nope"))).status == 401
