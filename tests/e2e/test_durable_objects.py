"""The Durable Objects' own behaviour in real workerd, through the Worker (not over fakes).

The RateLimiter object serialises every check of its partition: under 200 concurrent
requests exactly its capacity is admitted, whatever the interleaving."""

import asyncio

import httpx
import pytest

from tests.integration.conftest import GATEWAY_KEY, run_edge_gateway, upstream_env
from tests.support.mock_upstream import MockUpstreamProcess

CAPACITY = 37
CONCURRENT = 200


@pytest.fixture(scope="module")
def limited_worker(tmp_path_factory):
    with MockUpstreamProcess() as upstream:
        # Refill so slow that none of the 200 can be paid for by time passing.
        env = upstream_env(upstream.base_url, RATE_LIMIT_CAPACITY=str(CAPACITY),
                           RATE_LIMIT_REFILL_PER_SECOND="0.00001")
        with run_edge_gateway(tmp_path_factory.mktemp("do-limiter"), env) as server:
            yield server


async def test_limiter_admits_exactly_its_capacity_under_200_concurrent_requests(limited_worker):
    limits = httpx.Limits(max_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=limited_worker.base_url, timeout=60, limits=limits,
                                 headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as client:
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=_chat(i))
                                           for i in range(CONCURRENT)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == CAPACITY
    assert statuses.count(429) == CONCURRENT - CAPACITY
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["type"] and int(refused.headers["retry-after"]) > 0


def _chat(i: int) -> dict:
    # Distinct prompts: no answer can come from the cache instead of through the limiter.
    return {"model": "mock-1", "messages": [{"role": "user", "content": f"exactness {i}"}]}
