"""Adaptive leases (the default) through the real gateway, on either host (the standalone
server, or the Worker under `wrangler dev` with FLAREGATE_TARGET=edge): one process or one
isolate admits exactly the limit, and token limits beside a request rate settle to the real
usage while leasing."""

import asyncio
import json
import uuid

import httpx
import pytest

from flaregate.security.keys import key_id
from flaregate.security.signing import sign_request

from .conftest import ADMIN_KEY, GATEWAY_KEY, run_gateway, upstream_env

LONG_WINDOW = 366 * 86400  # no window boundary falls inside a test run
CHAT = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}
POLICIES = {
    "fixed_window": {"algorithm": "fixed_window", "limit": 50, "window_seconds": LONG_WINDOW},
    "token_bucket": {"algorithm": "token_bucket", "limit": 50, "refill_per_second": 1e-6},
}


def usage(server, key: str = GATEWAY_KEY) -> dict:
    """The object's view, by policy (the gateway answering gives back what it holds first)."""
    path = f"/admin/ratelimits/{key_id(key)}"
    headers = {"authorization": f"Bearer {ADMIN_KEY}", **sign_request(ADMIN_KEY, "GET", path)}
    response = httpx.get(server.base_url + path, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return {row["policy"]: row for row in response.json()["limits"]}


async def burst(base_url: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120) as client:
        headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
        return await asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT, headers=headers)
                                      for _ in range(count)))


@pytest.mark.parametrize("algorithm", sorted(POLICIES))
def test_a_burst_of_200_against_50_admits_exactly_50_with_the_default_leases(upstream, tmp_path, algorithm):
    policy = {"name": "burst", **POLICIES[algorithm]}  # no "lease": adaptive, the default
    env = upstream_env(upstream.base_url, FLAREGATE_RATE_LIMITS=json.dumps([policy]), CACHE_TTL_SECONDS="0")
    with run_gateway(tmp_path, env) as server:
        statuses = [r.status_code for r in asyncio.run(burst(server.base_url, 200))]
        assert statuses.count(200) == 50 and statuses.count(429) == 150, statuses
        late = httpx.post(server.base_url + "/v1/chat/completions", json=CHAT,
                          headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=30)
        assert late.status_code == 429 and '"burst";r=0' in late.headers["ratelimit"]
        assert usage(server)["burst"]["used"] == 50


def test_a_token_limit_beside_a_request_rate_leases_and_settles_to_the_real_usage(upstream, tmp_path):
    limits = [{"name": "rpm", "algorithm": "fixed_window", "limit": 10000, "window_seconds": LONG_WINDOW},
              {"name": "tpm", "algorithm": "fixed_window", "unit": "tokens", "limit": 1_000_000,
               "window_seconds": LONG_WINDOW}]
    env = upstream_env(upstream.base_url, FLAREGATE_RATE_LIMITS=json.dumps(limits), CACHE_TTL_SECONDS="0")
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    with run_gateway(tmp_path, env) as server, httpx.Client(base_url=server.base_url, timeout=30) as client:
        remaining, spent = [], 0
        for i in range(30):
            body = {"model": "gpt-test", "max_tokens": 50,
                    "messages": [{"role": "user", "content": f"count {'word ' * (i % 5)}{uuid.uuid4().hex}"}]}
            response = client.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 200, response.text
            spent += response.json()["usage"]["total_tokens"]
            remaining.append((int(response.headers["x-ratelimit-remaining-tokens"]), spent))
        # The isolate's view moves by the real usage, not by the ~60-token reservations.
        assert all(left == 1_000_000 - used for left, used in remaining)
        rows = usage(server)
        assert rows["tpm"]["used"] == spent and rows["rpm"]["used"] == 30
