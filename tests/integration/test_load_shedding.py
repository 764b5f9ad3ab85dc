"""Load shedding under overload: with the upstream slow and the in-flight limit reached,
low-priority requests are refused at once (503 overloaded, Retry-After) while high-priority
ones still go through; nothing waits until the client times out. Both hosts."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from .conftest import ADMIN_KEY, GATEWAY_KEY, run_gateway, upstream_env

CHAT = "/v1/chat/completions"
LIMIT = 4  # fixed (min = max): low may fill half of it, high all of it


@pytest.fixture(scope="module")
def shedding(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, LOAD_SHEDDING="true", SHED_INITIAL_LIMIT=str(LIMIT),
                       SHED_MIN_LIMIT=str(LIMIT), SHED_MAX_LIMIT=str(LIMIT), CACHE_TTL_SECONDS="0")
    with run_gateway(tmp_path_factory.mktemp("shedding"), env) as server:
        yield server


def _body(i: int) -> dict:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": f"overload {i}"}]}


async def test_low_priority_is_shed_at_once_while_high_priority_goes_through(shedding, upstream):
    upstream.add_faults({"kind": "delay", "seconds": 2.0, "path": CHAT, "times": -1})
    try:
        async with httpx.AsyncClient(base_url=shedding.base_url, timeout=30,
                                     limits=httpx.Limits(max_connections=64),
                                     headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as client:
            def send(i: int, priority: str):
                return client.post(CHAT, json=_body(i), headers={"x-flaregate-priority": priority})

            lows = [asyncio.ensure_future(send(i, "low")) for i in range(20)]
            await asyncio.sleep(0.5)  # the first lows are in flight, held by the slow upstream
            highs = await asyncio.gather(*(send(100 + i, "high") for i in range(2)))
            low_responses = await asyncio.gather(*lows)
    finally:
        upstream.reset()
    assert [r.status_code for r in highs] == [200, 200]
    low_statuses = sorted(r.status_code for r in low_responses)
    assert low_statuses == [200] * (LIMIT // 2) + [503] * (20 - LIMIT // 2)
    shed = [r for r in low_responses if r.status_code == 503]
    assert all(r.json()["error"]["code"] == "overloaded" and int(r.headers["retry-after"]) >= 1 for r in shed)
    # This process's (isolate's) limit and shed counts, in /health.
    async with httpx.AsyncClient(timeout=10) as client:
        state = (await client.get(shedding.base_url + "/health")).json()["load_shedding"]
    assert state["limit"] == LIMIT and state["shed"]["low"] >= 20 - LIMIT // 2 and state["shed"]["high"] == 0
    # ...and in the hub: /metrics counts the shed requests (the analytics events say shed).
    assert shed_in_metrics(shedding, 20 - LIMIT // 2) >= 20 - LIMIT // 2


def test_an_unknown_priority_counts_as_normal(shedding):
    response = httpx.post(shedding.base_url + CHAT, json=_body(999), timeout=30,
                          headers={"authorization": f"Bearer {GATEWAY_KEY}", "x-flaregate-priority": "superuser"})
    assert response.status_code == 200


def shed_in_metrics(server, at_least: int) -> float:
    """flaregate_shed_total summed over its labels, once the hub has counted ``at_least``."""
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    deadline = time.monotonic() + 15
    while True:
        text = httpx.get(server.base_url + "/metrics", headers=admin, timeout=10).text
        shed = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("flaregate_shed_total{"))
        if shed >= at_least or time.monotonic() > deadline:
            return shed
        time.sleep(0.2)
