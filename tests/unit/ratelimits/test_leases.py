"""Leases (ratelimits/leases.py), adaptive by default: several gateways, each one isolate
with its own leases, share one real limiter over real SQLite, and a counting client shows
the calls they save."""

import asyncio
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaregate.config import ConfigError, settings_from_vars
from flaregate.gateway import Gateway
from flaregate.hosts.local.runtime import LocalHubClient, LocalRateLimiterClient
from flaregate.http import Headers, Request
from flaregate.hub.aggregator import MetricsHub
from flaregate.ports import Ports
from flaregate.ratelimits.leases import HELD_SECONDS, LEASE_SECONDS, LEASE_SHARE
from flaregate.ratelimits.limiter import RateLimiter
from flaregate.ratelimits.policies import BudgetPolicy, RateLimitPolicy
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
PARTITION = f"key:{key_id(KEY)}"
LONG = 366 * 86400  # no window boundary inside a test
# The built-in mock, priced: a request of "hello" really costs 1 prompt and 5 completion tokens.
PRICED = {"mock-1": [{"provider": "mock", "input_price_per_1m": 1000, "output_price_per_1m": 2000}]}
REAL_TOKENS = 6
REAL_USD = (1 * 1000 + 5 * 2000) / 1e6


class CountingClient(LocalRateLimiterClient):
    """The real local client, counting the acquire calls that reach the limiter."""

    def __init__(self, limiter):
        super().__init__(limiter)
        self.acquires = 0
        self.reconciles = 0

    async def acquire(self, name, checks):
        self.acquires += 1
        await asyncio.sleep(0)  # a call is in flight for a moment, as over RPC
        return await super().acquire(name, checks)

    async def reconcile(self, name, adjustments):
        self.reconciles += 1
        return await super().reconcile(name, adjustments)


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


def chat(ip="203.0.113.7", max_tokens=None):
    body = {"model": "mock-1", "messages": [{"role": "user", "content": "hello"}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    headers = Headers([("content-type", "application/json"), ("authorization", f"Bearer {KEY}")])
    return Request("POST", "/v1/chat/completions", headers, json.dumps(body).encode(), client_ip=ip)


def policies(*items):
    return {"FLAREGATE_RATE_LIMITS": json.dumps(list(items))}


def admin(method, query=""):
    path = f"/admin/ratelimits/{key_id(KEY)}"
    signed = f"{path}?{query}" if query else path
    headers = {"authorization": f"Bearer {ADMIN}", **sign_request(ADMIN, method, signed, b"",
                                                                  timestamp=int(FakeClock().now()))}
    params = dict(p.split("=") for p in query.split("&")) if query else {}
    return Request(method, path, Headers(headers), b"", params, raw_query=query)


async def object_usage(gateway):
    """The object's view (after this isolate gave back what it holds), by policy."""
    response = await gateway.handle(admin("GET"))
    assert response.status == 200
    return {row["policy"]: row for row in json.loads(response.body)["limits"]}


ALGORITHMS = {
    "fixed_window": {"algorithm": "fixed_window", "window_seconds": LONG},
    "token_bucket": {"algorithm": "token_bucket", "refill_per_second": 1e-6},
    "sliding_window": {"algorithm": "sliding_window", "window_seconds": LONG},
}


# -- one isolate: exactly the limit ---------------------------------------------------------
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_a_burst_of_200_in_one_isolate_admits_exactly_50_by_default(algorithm):
    (gateway,), client, _ = isolates(1, policies({"name": "default", "limit": 50, **ALGORITHMS[algorithm]}))
    statuses = [r.status for r in await asyncio.gather(*(gateway.handle(chat()) for _ in range(200)))]
    assert statuses.count(200) == 50 and statuses.count(429) == 150
    # One after another, the isolate leases as its rate grows, and still admits exactly 50.
    (gateway,), client, _ = isolates(1, policies({"name": "default", "limit": 50, **ALGORITHMS[algorithm]}))
    statuses = [(await gateway.handle(chat())).status for _ in range(200)]
    assert statuses == [200] * 50 + [429] * 150
    assert client.acquires < 200
    assert (await object_usage(gateway))["default"]["used"] == 50


async def test_the_headers_count_down_as_one_call_per_request_would_say():
    (gateway,), client, _ = isolates(1, {"RATE_LIMIT_LEASE": "10"})
    remaining = []
    for _ in range(25):
        response = await gateway.handle(chat())
        assert response.status == 200
        remaining.append(int(response.headers["x-ratelimit-remaining-requests"]))
    # Leases of 2 x the recent requests, at most 10 units a call: calls at requests 1, 2, 5, 14, 24.
    assert client.acquires == 5
    assert remaining == list(range(999, 974, -1))


async def test_lease_0_asks_the_object_on_every_request():
    (gateway,), client, _ = isolates(1, {"RATE_LIMIT_LEASE": "0"})
    for _ in range(30):
        await gateway.handle(chat())
    assert client.acquires == 30


async def test_a_steady_rate_far_from_the_limit_makes_fewer_than_one_call_per_10_requests():
    (gateway,), client, clock = isolates(1, {"RATE_LIMIT_CAPACITY": "100000", "RATE_LIMIT_REFILL_PER_SECOND": "1000"})
    for _ in range(1000):  # 100 requests a second for 10 s
        clock.advance(0.01)
        assert (await gateway.handle(chat())).status == 200
    assert client.acquires * 10 < 1000
    # About one call per lease lifetime, once the lease has grown to the rate.
    assert client.acquires <= 10 / LEASE_SECONDS + 6


async def test_near_the_limit_every_unit_is_decided_by_the_object():
    (gateway,), client, _ = isolates(1, policies({"name": "default", "algorithm": "fixed_window", "limit": 50,
                                                  "window_seconds": LONG}))
    calls, statuses = [], []
    for _ in range(60):
        before = client.acquires
        statuses.append((await gateway.handle(chat())).status)
        calls.append(client.acquires - before)
    assert statuses == [200] * 50 + [429] * 10
    # Once the object has fewer than LEASE_SHARE units left after a request it lends none:
    # the last LEASE_SHARE units are one call each, and so is the first refusal; the isolate
    # repeats that refusal itself (until its retry-after, at most a lease lifetime).
    assert calls[50 - LEASE_SHARE:] == [1] * LEASE_SHARE + [1] + [0] * 9
    assert sum(calls[:50 - LEASE_SHARE]) < 50 - LEASE_SHARE


async def test_a_refusal_repeated_by_the_isolate_ends_with_its_retry_after():
    (gateway,), client, clock = isolates(1, {"RATE_LIMIT_CAPACITY": "2", "RATE_LIMIT_REFILL_PER_SECOND": "2"})
    assert [(await gateway.handle(chat())).status for _ in range(2)] == [200, 200]
    first = await gateway.handle(chat())
    assert first.status == 429 and first.headers["retry-after"] == "1"  # a token in 0.5 s
    calls = client.acquires
    again = await gateway.handle(chat())
    assert again.status == 429 and client.acquires == calls  # refused here, with the object's headers
    assert again.headers["x-ratelimit-remaining-requests"] == "0"
    clock.advance(0.5)
    assert (await gateway.handle(chat())).status == 200 and client.acquires == calls + 1


async def test_a_bucket_over_its_rate_repeats_a_refusal_for_a_quarter_of_its_refill_time():
    vars = {"RATE_LIMIT_CAPACITY": "40", "RATE_LIMIT_REFILL_PER_SECOND": "40"}  # empty to full: 1 s
    results = {}
    for lease in ("adaptive", "0"):
        (gateway,), client, clock = isolates(1, {**vars, "RATE_LIMIT_LEASE": lease})
        admitted = 0
        for _ in range(500):  # 100 a second against 40 a second, for 5 s
            clock.advance(0.01)
            admitted += (await gateway.handle(chat())).status == 200
        results[lease] = admitted, client.acquires
    (leased, leased_calls), (exact, exact_calls) = results["adaptive"], results["0"]
    assert exact == 40 + 40 * 5 - 1  # the bucket, asked on every request
    # Refusals held 0.25 s leave what refills meanwhile in the bucket (10 units, never past
    # its 40): only the last hold's and the last lease's units are short when traffic stops.
    assert exact - 40 // 4 - 4 <= leased <= exact
    assert exact_calls == 500 and leased_calls * 3 < exact_calls


async def test_lease_0_never_repeats_a_refusal():
    (gateway,), client, _ = isolates(1, {"RATE_LIMIT_CAPACITY": "1", "RATE_LIMIT_LEASE": "0"})
    statuses = [(await gateway.handle(chat())).status for _ in range(5)]
    assert statuses == [200] + [429] * 4 and client.acquires == 5


# -- lifetimes, give-backs ------------------------------------------------------------------
async def test_a_fixed_windows_lease_ends_with_its_window():
    vars = policies({"name": "default", "algorithm": "fixed_window", "limit": 100, "window_seconds": 10})
    (gateway,), client, clock = isolates(1, vars)
    clock.advance(9.5)  # FakeClock starts on a multiple of 10: half a second of the window left
    for _ in range(3):  # the second takes a lease of 2, the third spends from it
        assert (await gateway.handle(chat())).status == 200
    assert client.acquires == 2
    clock.advance(0.6)  # the next window: its units are not the old lease's
    response = await gateway.handle(chat())
    assert client.acquires == 3
    assert response.headers["x-ratelimit-remaining-requests"] == "99"  # the new window: one spent


async def test_a_lease_taken_at_a_windows_end_is_not_spent_in_the_next():
    vars = policies({"name": "default", "algorithm": "fixed_window", "limit": 40, "window_seconds": 2})
    (a, b), _, clock = isolates(2, vars)
    clock.advance(1.8)
    for _ in range(3):
        assert (await a.handle(chat())).status == 200  # a holds units of the window about to end
    clock.advance(0.2)
    statuses = [(await g.handle(chat())).status for g in [a] * 30 + [b] * 10 + [a] * 10]
    assert statuses.count(200) == 40  # the new window's 40, none of them from a's old lease


async def test_what_a_lease_did_not_spend_goes_back_with_the_next_call():
    (gateway,), client, clock = isolates(1, {})
    for _ in range(2):  # the second takes a lease of 2 more
        await gateway.handle(chat())
    clock.advance(LEASE_SECONDS + 0.01)  # the lease has ended with 2 unspent
    response = await gateway.handle(chat())
    assert client.acquires == 3 and client.reconciles == 0  # the give-back rode on that call
    assert response.headers["x-ratelimit-remaining-requests"] == "997"  # nothing lost: 3 spent
    assert (await object_usage(gateway))["default"]["used"] == 3


async def test_a_bucket_takes_back_only_what_it_still_holds():
    (gateway,), client, clock = isolates(1, {})
    for _ in range(2):
        await gateway.handle(chat())
    clock.advance(HELD_SECONDS + 1)  # past the bucket's hold: the 2 unspent units stay spent
    response = await gateway.handle(chat())
    assert response.headers["x-ratelimit-remaining-requests"] == "995"


async def test_a_request_refused_by_another_partition_gives_its_leased_unit_back():
    vars = {"RATE_LIMIT_CAPACITY": "100",
            **policies({"name": "per-net", "algorithm": "fixed_window", "limit": 1, "window_seconds": 60,
                        "scope": "ip"})}
    (gateway,), _, _ = isolates(1, vars)
    assert '"default";r=99' in (await gateway.handle(chat(ip="198.51.100.1"))).headers["ratelimit"]
    refused = await gateway.handle(chat(ip="198.51.100.2"))  # same /24: the network's limit refuses
    assert refused.status == 429 and '"default";r=99' in refused.headers["ratelimit"]
    assert '"default";r=98' in (await gateway.handle(chat(ip="192.0.2.1"))).headers["ratelimit"]


async def test_a_reset_drops_the_isolates_lease():
    (gateway,), client, _ = isolates(1, {"RATE_LIMIT_CAPACITY": "20"})
    for _ in range(3):
        await gateway.handle(chat())
    assert client.acquires == 2
    assert (await gateway.handle(admin("DELETE"))).status == 200
    response = await gateway.handle(chat())
    assert client.acquires == 3 and response.headers["x-ratelimit-remaining-requests"] == "19"


async def test_a_lease_held_while_its_bucket_refills_never_lets_a_burst_pass_capacity():
    (a, b), _, clock = isolates(2, {"RATE_LIMIT_CAPACITY": "20", "RATE_LIMIT_REFILL_PER_SECOND": "10"})
    for _ in range(5):
        assert (await a.handle(chat())).status == 200  # a ends up holding a lease of 3
    clock.advance(LEASE_SECONDS - 0.1)  # the bucket refills while a still holds those 3
    burst = [(await g.handle(chat())).status for g in [a, b] * 20]
    # At one instant no more than the bucket's capacity, counting a's lease: 20, not 23.
    assert burst.count(200) == 20


# -- policies --------------------------------------------------------------------------------
def test_leases_are_adaptive_unless_a_policy_says_otherwise():
    assert RateLimitPolicy(name="p", algorithm="fixed_window", limit=5, window_seconds=1).lease is None
    assert RateLimitPolicy(name="p", algorithm="fixed_window", limit=5, window_seconds=1, lease="adaptive").leases
    assert not RateLimitPolicy(name="p", algorithm="fixed_window", limit=5, window_seconds=1, lease=0).leases
    assert not BudgetPolicy(name="b", period="day", limit_usd=1, lease=0).leases
    assert BudgetPolicy(name="b", period="day", limit_usd=1).leases
    assert settings_from_vars({}).rate_limit.lease is None
    assert settings_from_vars({"RATE_LIMIT_LEASE": "0"}).rate_limit.lease == 0
    # Token limits and sliding windows lease too now (they never let more through).
    assert RateLimitPolicy(name="p", algorithm="sliding_window", unit="tokens", limit=9, window_seconds=60,
                           lease=50).leases


def test_a_fixed_lease_larger_than_a_request_limit_is_refused_at_load():
    with pytest.raises(ValueError, match="larger than limit"):
        RateLimitPolicy(name="p", algorithm="fixed_window", limit=5, window_seconds=60, lease=10)
    with pytest.raises(ConfigError, match="lease"):
        settings_from_vars({"RATE_LIMIT_CAPACITY": "5", "RATE_LIMIT_LEASE": "10"})


# -- tokens and money in the same partition --------------------------------------------------
METERED = {**policies({"name": "rpm", "algorithm": "fixed_window", "limit": 10000, "window_seconds": 60},
                      {"name": "tpm", "algorithm": "fixed_window", "unit": "tokens", "limit": 100000,
                       "window_seconds": 60}),
           "FLAREGATE_ROUTES": json.dumps(PRICED),
           "FLAREGATE_BUDGETS": json.dumps([{"name": "daily", "period": "day", "limit_usd": 100}]),
           "RATE_LIMIT_CAPACITY": "100000", "RATE_LIMIT_REFILL_PER_SECOND": "1000"}


async def test_a_request_rate_beside_a_token_limit_and_a_budget_leases_and_settles_locally():
    (gateway,), client, clock = isolates(1, METERED)
    tokens = []
    for _ in range(300):
        clock.advance(0.01)
        response = await gateway.handle(chat(max_tokens=8))
        assert response.status == 200
        tokens.append(int(response.headers["x-ratelimit-remaining-tokens"]))
    assert client.acquires * 10 < 300
    assert client.reconciles == 1  # the first request only: it took no lease, so it settles with the object
    # The isolate's view moves by the real usage, as settling with the object would say.
    assert tokens == [100000 - REAL_TOKENS * n for n in range(1, 301)]
    usage = await object_usage(gateway)  # after giving back: exactly the real usage
    assert usage["tpm"]["used"] == REAL_TOKENS * 300 and usage["rpm"]["used"] == 300
    assert usage["daily"]["used"] == pytest.approx(REAL_USD * 300)


async def test_usage_above_the_estimate_is_charged_to_the_lease_or_else_to_the_object():
    (gateway,), client, clock = isolates(1, METERED)
    for _ in range(100):  # max_tokens 1: each answer uses 4 more completion tokens than reserved
        clock.advance(0.01)
        assert (await gateway.handle(chat(max_tokens=1))).status == 200
    assert client.acquires * 10 < 100
    usage = await object_usage(gateway)
    assert usage["tpm"]["used"] == REAL_TOKENS * 100
    assert usage["daily"]["used"] == pytest.approx(REAL_USD * 100)


async def test_a_budget_is_never_overspent_through_leases_and_its_end_is_decided_by_the_object():
    vars = {"FLAREGATE_ROUTES": json.dumps(PRICED),
            "FLAREGATE_BUDGETS": json.dumps([{"name": "daily", "period": "day", "limit_usd": 1.0}]),
            "RATE_LIMIT_CAPACITY": "100000"}
    (gateway,), client, _ = isolates(1, vars)
    statuses = [(await gateway.handle(chat(max_tokens=8))).status for _ in range(120)]
    admitted = statuses.count(200)
    assert statuses == [200] * admitted + [429] * (120 - admitted)
    spent = admitted * REAL_USD
    assert spent <= 1.0 and 1.0 - spent < 0.027  # within one request's estimate of the budget
    assert (await object_usage(gateway))["daily"]["used"] == pytest.approx(spent)
    calls = client.acquires
    assert (await gateway.handle(chat(max_tokens=8))).status == 429
    assert client.acquires == calls + 1  # "budget exceeded" always comes from the object


# -- three isolates --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_three_isolates_admit_between_47_and_50_of_a_50_window(algorithm, seed):
    gateways, client, clock = isolates(3, policies({"name": "default", "limit": 50, **ALGORITHMS[algorithm]}))
    rnd = random.Random(seed)
    admitted = 0
    for _ in range(20):  # bursts of 10 at once, each request to one of the three at random
        clock.advance(rnd.choice([0.0, 0.05, 0.3]))
        burst = await asyncio.gather(*(gateways[rnd.randrange(3)].handle(chat()) for _ in range(10)))
        admitted += sum(r.status == 200 for r in burst)
    assert 47 <= admitted <= 50
    assert client.acquires < 200


# Random traffic over three isolates: a fixed window never lets more than its limit through,
# a sliding log never more than its limit in any interval of its window, a bucket never more
# than its capacity plus what it refilled, in any interval. Waits are short against the
# lease's lifetime, so leases often span a window's end.
STEPS = st.lists(st.tuples(st.integers(0, 2), st.sampled_from((0.0, 0.0, 0.0, 0.01, 0.1, 0.3, 0.7, 2.1))),
                 min_size=1, max_size=150)
LEASES = st.sampled_from([None, None, 3, 8])  # adaptive (the default), or a fixed maximum


def lease_vars(lease):
    return {} if lease is None else {"lease": lease}


async def run(gateways, clock, steps, request=chat):
    times = []
    for isolate, wait in steps:
        clock.advance(wait)
        if (await gateways[isolate].handle(request())).status == 200:
            times.append(clock.now())
    return times


@settings(max_examples=60, deadline=None)
@given(steps=STEPS, lease=LEASES)
async def test_random_traffic_never_beats_a_fixed_window(steps, lease):
    vars = policies({"name": "default", "algorithm": "fixed_window", "limit": 20, "window_seconds": 2,
                     **lease_vars(lease)})
    gateways, _, clock = isolates(3, vars)
    admitted: dict[float, int] = {}
    for t in await run(gateways, clock, steps):
        admitted[t // 2] = admitted.get(t // 2, 0) + 1
    assert all(count <= 20 for count in admitted.values())


@settings(max_examples=60, deadline=None)
@given(steps=STEPS, lease=LEASES)
async def test_random_traffic_never_beats_a_sliding_log(steps, lease):
    vars = policies({"name": "default", "algorithm": "sliding_window", "limit": 20, "window_seconds": 40,
                     **lease_vars(lease)})
    gateways, _, clock = isolates(3, vars)
    times = await run(gateways, clock, steps)
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t < start + 40) <= 20


@settings(max_examples=60, deadline=None)
@given(steps=STEPS, lease=st.sampled_from([None, None, 3, 8]))
async def test_random_traffic_never_beats_a_buckets_capacity_and_refill_in_any_interval(steps, lease):
    vars = {"RATE_LIMIT_CAPACITY": "20", "RATE_LIMIT_REFILL_PER_SECOND": "2"}
    if lease is not None:
        vars["RATE_LIMIT_LEASE"] = str(lease)
    gateways, _, clock = isolates(3, vars)
    times = await run(gateways, clock, steps)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= 20 + 2 * (times[j] - start) + 1e-9


@settings(max_examples=40, deadline=None)
@given(steps=STEPS, lease=LEASES)
async def test_random_traffic_never_beats_a_token_limit_beside_a_request_limit(steps, lease):
    # max_tokens set: the estimate is an upper bound, so the token limit is never passed.
    vars = policies({"name": "rpm", "algorithm": "fixed_window", "limit": 8, "window_seconds": 2,
                     **lease_vars(lease)},
                    {"name": "tpm", "algorithm": "fixed_window", "unit": "tokens", "limit": 40,
                     "window_seconds": 2, **lease_vars(lease)})
    gateways, _, clock = isolates(3, vars)
    requests: dict[float, int] = {}
    for t in await run(gateways, clock, steps, lambda: chat(max_tokens=8)):
        requests[t // 2] = requests.get(t // 2, 0) + 1
    assert all(count <= 8 for count in requests.values())
    assert all(count * REAL_TOKENS <= 40 for count in requests.values())
