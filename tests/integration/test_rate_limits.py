"""Limits through the real server: exact under concurrency, kept across restarts, tokens
reconciled to the real usage from the real mock upstream, budgets, and the admin API."""

import asyncio
import hashlib
import json
import time
import uuid

import httpx
import openai
import pytest

from flaregate.security.signing import sign_request

from .conftest import GATEWAY_KEY, run_gateway, upstream_env

ADMIN_KEY = "fg-admin-secret-for-tests"
BUDGET_KEY = "fg-test-budget-key-9876543210"
LONG_WINDOW = 366 * 86400  # no window boundary falls inside a test run
CHAT = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}


def key_id(key: str) -> str:
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def admin(method: str, path: str) -> dict[str, str]:
    """Headers of an admin request: the admin key, and a signature (required on /admin/)."""
    return {"authorization": f"Bearer {ADMIN_KEY}", **sign_request(ADMIN_KEY, method, path)}


def admin_usage(server, key: str) -> dict:
    path = f"/admin/ratelimits/{key_id(key)}"
    response = httpx.get(server.base_url + path, headers=admin("GET", path))
    assert response.status_code == 200, response.text
    return {row["policy"]: row for row in response.json()["limits"]}


ALGORITHMS = {
    "token_bucket": {"algorithm": "token_bucket", "limit": 50, "refill_per_second": 1e-6},
    "sliding_window": {"algorithm": "sliding_window", "limit": 50, "window_seconds": LONG_WINDOW},
    "fixed_window": {"algorithm": "fixed_window", "limit": 50, "window_seconds": LONG_WINDOW},
}


async def burst(base_url: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
        return await asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT, headers=headers)
                                      for _ in range(count)))


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_200_concurrent_requests_against_a_limit_of_50_admit_exactly_50_and_survive_a_restart(
        upstream, tmp_path, algorithm):
    policy = {"name": "burst", **ALGORITHMS[algorithm]}
    env = upstream_env(upstream.base_url, FLAREGATE_RATE_LIMITS=json.dumps([policy]), FLAREGATE_ADMIN_KEY=ADMIN_KEY)
    with run_gateway(tmp_path, env) as server:
        started = time.perf_counter()
        responses = asyncio.run(burst(server.base_url, 200))
        elapsed = time.perf_counter() - started
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 50 and statuses.count(429) == 150, statuses
        for refused in (r for r in responses if r.status_code == 429):
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert '"burst";r=0' in refused.headers["ratelimit"]
        print(f"\n{algorithm}: 200 concurrent requests in {elapsed:.2f}s ({200 / elapsed:.0f} req/s)")
    with run_gateway(tmp_path, env) as server:  # same data dir: the counters are still there
        again = httpx.post(server.base_url + "/v1/chat/completions", json=CHAT,
                           headers={"authorization": f"Bearer {GATEWAY_KEY}"})
        assert again.status_code == 429 and '"burst";r=0' in again.headers["ratelimit"]
        assert admin_usage(server, GATEWAY_KEY)["burst"]["used"] == 50


@pytest.mark.parametrize("algorithm", ["token_bucket", "fixed_window"])
def test_a_leased_limit_admits_no_more_than_its_limit_and_asks_the_object_less(upstream, tmp_path, algorithm):
    """With ``lease`` the gateway takes units in fives: a burst is still never let past the
    limit, and at most ``lease - 1`` fewer get through (units a lease held when it ended)."""
    policy = {"name": "burst", **ALGORITHMS[algorithm], "lease": 5}
    env = upstream_env(upstream.base_url, FLAREGATE_RATE_LIMITS=json.dumps([policy]), FLAREGATE_ADMIN_KEY=ADMIN_KEY)
    with run_gateway(tmp_path, env) as server:
        statuses = [r.status_code for r in asyncio.run(burst(server.base_url, 120))]
        assert statuses.count(200) + statuses.count(429) == 120, statuses
        assert admin_usage(server, GATEWAY_KEY)["burst"]["used"] == 50  # the object gave out all 50
        admitted = statuses.count(200)
        headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
        for _ in range(5):  # units a lease still holds go to the next requests, then it is over
            late = httpx.post(server.base_url + "/v1/chat/completions", json=CHAT, headers=headers)
            if late.status_code != 200:
                break
            admitted += 1
        assert late.status_code == 429 and '"burst";r=0' in late.headers["ratelimit"]
        print(f"\n{algorithm}, lease 5: {admitted} of 50 admitted, burst {statuses.count(200)}")
        assert 46 <= admitted <= 50, statuses


@pytest.fixture(scope="module")
def metered(upstream, tmp_path_factory):
    routes = {
        "gpt-test": ["upstream"],
        "gpt-priced": [{"provider": "upstream", "input_price_per_1m": 1000, "output_price_per_1m": 2000}],
        "mock-1": ["mock"],
    }
    env = upstream_env(
        upstream.base_url,
        FLAREGATE_API_KEYS=f"{GATEWAY_KEY},{BUDGET_KEY}",
        FLAREGATE_ROUTES=json.dumps(routes),
        FLAREGATE_RATE_LIMITS=json.dumps([{"name": "tpm", "algorithm": "fixed_window", "unit": "tokens",
                                           "limit": 1_000_000, "window_seconds": LONG_WINDOW}]),
        FLAREGATE_BUDGETS=json.dumps([{"name": "daily", "period": "day", "limit_usd": 0.2}]),
        FLAREGATE_ADMIN_KEY=ADMIN_KEY,
        CACHE_TTL_SECONDS="0",
    )
    with run_gateway(tmp_path_factory.mktemp("metered"), env) as server:
        yield server


def sdk(server, key=GATEWAY_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=20)


def test_reservation_and_reconciliation_move_remaining_tokens_by_the_real_usage(metered):
    client = sdk(metered)
    seen = []
    for words in ("one two", "three four five six seven", "eight"):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", max_tokens=400, messages=[{"role": "user", "content": f"{words} {uuid.uuid4().hex}"}])
        seen.append((int(raw.headers["x-ratelimit-remaining-tokens"]), raw.parse().usage.total_tokens))
        assert raw.headers["x-ratelimit-limit-tokens"] == "1000000"
    for (before, _), (after, used) in zip(seen, seen[1:], strict=False):
        assert before - after == used  # the real usage, not the ~400-token reservation


def test_a_stream_is_charged_its_real_usage_when_it_ends(metered):
    before = admin_usage(metered, GATEWAY_KEY)["tpm"]["used"]
    stream = sdk(metered).chat.completions.create(
        model="gpt-test", stream=True, stream_options={"include_usage": True}, max_tokens=900,
        messages=[{"role": "user", "content": f"stream me {uuid.uuid4().hex}"}])
    usage = [chunk.usage for chunk in stream if chunk.usage][-1]
    for _ in range(50):  # the settlement runs in the background just after the last byte
        used = admin_usage(metered, GATEWAY_KEY)["tpm"]["used"]
        if used == before + usage.total_tokens:
            break
        time.sleep(0.05)
    assert used == before + usage.total_tokens  # not the 900-token reservation


def test_an_exhausted_budget_answers_429_with_an_error_that_says_so(metered):
    client = sdk(metered, BUDGET_KEY)
    spent = 0.0
    for _ in range(40):  # each call costs a few cents; the budget is 0.20 USD
        try:
            completion = client.chat.completions.create(
                model="gpt-priced", max_tokens=10, messages=[{"role": "user", "content": "spend a little"}])
        except openai.RateLimitError as exc:
            refused = exc
            break
        spent += (completion.usage.prompt_tokens * 1000 + completion.usage.completion_tokens * 2000) / 1e6
    else:
        pytest.fail("the budget never ran out")
    assert refused.status_code == 429
    assert refused.body["type"] == "insufficient_quota" and refused.body["code"] == "budget_exceeded"
    assert 0 < int(refused.response.headers["retry-after"]) <= 86400
    assert 0.2 - 0.05 < spent <= 0.2  # never more than the budget, and not far below it
    assert admin_usage(metered, BUDGET_KEY)["daily"]["used"] == pytest.approx(spent)
    # Other keys keep their own budget.
    assert sdk(metered).chat.completions.create(model="gpt-priced", max_tokens=10,
                                                messages=[{"role": "user", "content": "mine"}])


def test_admin_reads_and_resets_a_keys_usage_and_needs_the_admin_key(metered):
    path = f"/admin/ratelimits/{key_id(GATEWAY_KEY)}"
    url = metered.base_url + path
    assert httpx.get(url).status_code == 401
    unsigned = httpx.get(url, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert unsigned.status_code == 401 and unsigned.json()["error"]["code"] == "signature_required"
    wrong_key = {**admin("GET", path), "authorization": f"Bearer {GATEWAY_KEY}"}
    assert httpx.get(url, headers=wrong_key).status_code == 401
    sdk(metered).chat.completions.create(**CHAT)
    tpm = admin_usage(metered, GATEWAY_KEY)["tpm"]
    assert tpm["used"] >= 1 and tpm["unit"] == "tokens" and tpm["algorithm"] == "fixed_window"
    reset = httpx.delete(url + "?policy=tpm", headers=admin("DELETE", path + "?policy=tpm"))  # the query is signed
    assert reset.status_code == 200 and reset.json()["reset"] == 1
    assert "tpm" not in admin_usage(metered, GATEWAY_KEY)
