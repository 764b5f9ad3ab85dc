"""Leases (ratelimits/leases.py): several gateways, each one isolate with its own leases,
share one real limiter over real SQLite, and a counting client shows the calls it saves."""

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaregate.config import ConfigError, settings_from_vars
from flaregate.gateway import Gateway
from flaregate.hosts.local.runtime import LocalHubClient, LocalRateLimiterClient
from flaregate.http import Headers, Request
from flaregate.observability.hub import MetricsHub
from flaregate.ports import Ports
from flaregate.ratelimits.leases import LEASE_SECONDS
from flaregate.ratelimits.limiter import RateLimiter
from flaregate.ratelimits.policies import RateLimitPolicy
from flaregate.security.keys import key_id
from flaregate.security.signing import sign_request
from tests.support.fakes import (
    FakeClock,
    MemoryKV,
    MemorySql,
    RecordingBroadcaster,
    RecordingScheduler,
)

KEY, ADMIN = "gw-key-one", "admin-secret-xyz"


class CountingClient(LocalRateLimiterClient):
    """The real local client, counting the acquire calls that reach the limiter."""

    def __init__(self, limiter):
        super().__init__(limiter)
        self.acquires = 0

    async def acquire(self, name, checks):
        self.acquires += 1
        await asyncio.sleep(0)  # a call is in flight for a moment, as over RPC
        return await super().acquire(name, checks)


class DroppedTasks:
    """Background work (analytics) is not under test here: dropped unrun."""

    def run(self, job):
        job.close()


def isolates(count, vars, clock=None):
    """``count`` gateways (isolates) over one limiter, one clock and one counting client."""
    clock = clock or FakeClock()
    sql = MemorySql()
    client = CountingClient(RateLimiter(sql, clock))
    base = {"FLAREGATE_API_KEYS": KEY, "CACHE_TTL_SECONDS": "0", "FLAREGATE_ADMIN_KEY": ADMIN,
            "RATE_LIMIT_CAPACITY": "1000", "RATE_LIMIT_REFILL_PER_SECOND": "0.001"}
    settings_ = settings_from_vars({**base, **vars})
    gateways = []
    for _ in range(count):
        hub = MetricsHub(MemorySql(), clock, RecordingBroadcaster(), RecordingScheduler())
        ports = Ports(clock=clock, cache=MemoryKV(clock), upstream=None, tasks=DroppedTasks(),
                      rate_limiter=client, metrics_hub=LocalHubClient(hub))
        gateways.append(Gateway(settings_, ports))
    return gateways, client, clock


def chat(ip="203.0.113.7"):
    body = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "hello"}]}).encode()
    headers = Headers([("content-type", "application/json"), ("authorization", f"Bearer {KEY}")])
    return Request("POST", "/v1/chat/completions", headers, body, client_ip=ip)


def policies(*items):
    return {"FLAREGATE_RATE_LIMITS": json.dumps(list(items))}


async def test_one_call_serves_a_lease_of_requests_and_the_headers_still_count_down():
    (gateway,), client, _ = isolates(1, {"RATE_LIMIT_LEASE": "10"})
    remaining = []
    for _ in range(25):
        response = await gateway.handle(chat())
        assert response.status == 200
        remaining.append(int(response.headers["x-ratelimit-remaining-requests"]))
    assert client.acquires == 3  # 10 + 10 + 5 of a third lease
    assert remaining == list(range(999, 974, -1))  # one isolate: exactly what an object per request says


async def test_without_a_lease_every_request_asks_the_object():
    (gateway,), client, _ = isolates(1, {})
    for _ in range(5):
        await gateway.handle(chat())
    assert client.acquires == 5


async def test_isolates_sharing_a_limit_let_exactly_the_limit_through_and_no_more():
    gateways, client, _ = isolates(3, {"RATE_LIMIT_CAPACITY": "25", "RATE_LIMIT_LEASE": "10"})
    statuses = [(await gateways[i % 3].handle(chat())).status for i in range(60)]
    # Two isolates hold leases of 10; the third is refused a lease and takes single units.
    assert statuses.count(200) == 25
    assert statuses.count(429) == 35
    assert client.acquires < 60


async def test_a_burst_takes_one_lease_and_single_units_and_still_admits_the_whole_limit():
    (gateway,), client, _ = isolates(1, {"RATE_LIMIT_CAPACITY": "20", "RATE_LIMIT_LEASE": "5"})
    statuses = [r.status for r in await asyncio.gather(*(gateway.handle(chat()) for _ in range(50)))]
    # One request asks for a lease while the others ask for one unit each; those the object
    # refuses once it is empty spend what the lease kept.
    assert statuses.count(200) == 20 and statuses.count(429) == 30
    assert client.acquires == 50


async def test_a_fixed_windows_lease_ends_with_its_window():
    vars = {**policies({"name": "default", "algorithm": "fixed_window", "limit": 100, "window_seconds": 10,
                        "lease": 10})}
    (gateway,), client, clock = isolates(1, vars)
    clock.advance(9.5)  # FakeClock starts on a multiple of 10: half a second of the window left
    assert (await gateway.handle(chat())).status == 200
    assert (await gateway.handle(chat())).status == 200 and client.acquires == 1
    clock.advance(0.6)  # the next window: its units are not the old lease's
    response = await gateway.handle(chat())
    assert client.acquires == 2
    assert response.headers["x-ratelimit-remaining-requests"] == "99"  # 100 - 10 leased + 9 held


async def test_a_lease_taken_at_a_windows_end_is_not_spent_in_the_next():
    vars = policies({"name": "default", "algorithm": "fixed_window", "limit": 8, "window_seconds": 2, "lease": 6})
    (a, b, c), _, clock = isolates(3, vars)
    clock.advance(1.8)
    assert (await a.handle(chat())).status == 200  # a holds 5 units of the window about to end
    clock.advance(0.2)
    statuses = [(await g.handle(chat())).status for g in [b] * 6 + [c] * 3 + [a] * 5]
    assert statuses.count(200) == 8  # b's lease and c's single units fill the new window; a is refused


async def test_a_lease_ends_after_its_lifetime_and_its_unspent_units_stay_spent():
    (gateway,), client, clock = isolates(1, {"RATE_LIMIT_LEASE": "10"})
    await gateway.handle(chat())
    clock.advance(LEASE_SECONDS + 0.01)
    response = await gateway.handle(chat())
    assert client.acquires == 2
    # 20 taken from the bucket, 2 spent: the 9 the first lease left unspent are not given back.
    assert response.headers["x-ratelimit-remaining-requests"] == "989"


async def test_a_request_refused_by_another_partition_gives_its_leased_unit_back():
    vars = {"RATE_LIMIT_CAPACITY": "100", "RATE_LIMIT_LEASE": "10",
            **policies({"name": "per-net", "algorithm": "fixed_window", "limit": 1, "window_seconds": 60,
                        "scope": "ip"})}
    (gateway,), _, _ = isolates(1, vars)
    assert '"default";r=99' in (await gateway.handle(chat(ip="198.51.100.1"))).headers["ratelimit"]
    refused = await gateway.handle(chat(ip="198.51.100.2"))  # same /24: the network's limit refuses
    assert refused.status == 429 and '"default";r=99' in refused.headers["ratelimit"]
    assert '"default";r=98' in (await gateway.handle(chat(ip="192.0.2.1"))).headers["ratelimit"]


async def test_a_reset_drops_the_isolates_lease():
    (gateway,), client, _ = isolates(1, {"RATE_LIMIT_CAPACITY": "20", "RATE_LIMIT_LEASE": "10"})
    await gateway.handle(chat())
    path = f"/admin/ratelimits/{key_id(KEY)}"
    headers = {"authorization": f"Bearer {ADMIN}", **sign_request(ADMIN, "DELETE", path, b"",
                                                                  timestamp=int(FakeClock().now()))}
    assert (await gateway.handle(Request("DELETE", path, Headers(headers), b"", {}))).status == 200
    response = await gateway.handle(chat())
    assert client.acquires == 2 and response.headers["x-ratelimit-remaining-requests"] == "19"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"algorithm": "token_bucket", "unit": "tokens", "limit": 1000, "window_seconds": 60}, "a lease counts requests"),
        ({"algorithm": "sliding_window", "limit": 100, "window_seconds": 60}, "could over-admit"),
        ({"algorithm": "fixed_window", "limit": 5, "window_seconds": 60}, "larger than limit"),
    ],
)
def test_a_lease_a_policy_cannot_keep_exactly_is_refused_at_load(policy, message):
    with pytest.raises(ValueError, match=message):
        RateLimitPolicy(name="p", lease=10, **policy)


def test_the_default_policys_lease_cannot_exceed_its_capacity():
    with pytest.raises(ConfigError, match="lease"):
        settings_from_vars({"RATE_LIMIT_CAPACITY": "5", "RATE_LIMIT_LEASE": "10"})


# Random traffic over three isolates: a fixed window never lets more than its limit through,
# and a bucket never more than its capacity plus what it refilled.
# Waits are short against the lease's lifetime, so leases often span a window's end.
STEPS = st.lists(st.tuples(st.integers(0, 2), st.sampled_from((0.0, 0.0, 0.01, 0.1, 0.3, 0.7))),
                 min_size=1, max_size=80)


@settings(max_examples=40, deadline=None)
@given(steps=STEPS, lease=st.integers(2, 6))
async def test_random_traffic_never_beats_a_fixed_window(steps, lease):
    vars = policies({"name": "default", "algorithm": "fixed_window", "limit": 8, "window_seconds": 2,
                     "lease": lease})
    gateways, _, clock = isolates(3, vars)
    admitted: dict[float, int] = {}
    for isolate, wait in steps:
        clock.advance(wait)
        if (await gateways[isolate].handle(chat())).status == 200:
            window = clock.now() // 2
            admitted[window] = admitted.get(window, 0) + 1
    assert all(count <= 8 for count in admitted.values())


@settings(max_examples=40, deadline=None)
@given(steps=STEPS, lease=st.integers(2, 8))
async def test_random_traffic_never_beats_a_buckets_capacity_and_refill(steps, lease):
    gateways, _, clock = isolates(3, {"RATE_LIMIT_CAPACITY": "10", "RATE_LIMIT_REFILL_PER_SECOND": "2",
                                      "RATE_LIMIT_LEASE": str(lease)})
    start, admitted = clock.now(), 0
    for isolate, wait in steps:
        clock.advance(wait)
        admitted += (await gateways[isolate].handle(chat())).status == 200
        assert admitted <= 10 + 2 * (clock.now() - start) + 1e-9
