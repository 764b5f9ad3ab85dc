"""A route target's max_in_flight: at its cap a target is skipped like one cooling down (the
request falls over to the next target), and with no target left the answer is an immediate
503 overloaded. The real mock upstream holds calls open with a delay. Both hosts."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from .conftest import GATEWAY_KEY, run_gateway, upstream_env

CHAT = "/v1/chat/completions"
CAP = 2
ROUTES = {
    "capped": {"targets": [{"provider": "upstream", "model": "gpt-test", "max_in_flight": CAP}, "mock"]},
    "capped-only": {"targets": [{"provider": "upstream", "model": "gpt-test", "max_in_flight": CAP}]},
}


@pytest.fixture(scope="module")
def capped(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, FLAREGATE_ROUTES=json.dumps(ROUTES), CACHE_TTL_SECONDS="0")
    with run_gateway(tmp_path_factory.mktemp("capped"), env) as server:
        yield server


async def burst(server, model: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=httpx.Limits(max_connections=32),
                                 headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as client:
        first = [asyncio.ensure_future(client.post(CHAT, json=_body(model, i))) for i in range(CAP)]
        await asyncio.sleep(0.5)  # those hold the target's places while the upstream is slow
        rest = await asyncio.gather(*(client.post(CHAT, json=_body(model, CAP + i)) for i in range(n - CAP)))
        return [*await asyncio.gather(*first), *rest]


def _body(model: str, i: int) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": f"capped {i}"}]}


async def test_a_target_at_its_cap_is_skipped_and_the_next_one_answers(capped, upstream):
    upstream.add_faults({"kind": "delay", "seconds": 1.5, "path": CHAT, "times": -1})
    try:
        responses = await burst(capped, "capped", 6)
    finally:
        upstream.reset()
    assert [r.status_code for r in responses] == [200] * 6
    providers = [r.headers["x-flaregate-provider"] for r in responses]
    assert providers[:CAP] == ["upstream"] * CAP and providers[CAP:] == ["mock"] * (6 - CAP)


async def test_with_no_target_left_the_answer_is_503_overloaded_at_once(capped, upstream):
    before = upstream.stats()["calls"].get(CHAT, 0)
    upstream.add_faults({"kind": "delay", "seconds": 1.5, "path": CHAT, "times": -1})
    try:
        responses = await burst(capped, "capped-only", 6)
        calls = upstream.stats()["calls"].get(CHAT, 0) - before
    finally:
        upstream.reset()
    assert [r.status_code for r in responses] == [200] * CAP + [503] * (6 - CAP)
    for refused in responses[CAP:]:
        assert refused.json()["error"]["code"] == "overloaded" and refused.headers["retry-after"] == "1"
    assert calls == CAP  # the refused requests never reached the provider, nor waited for a place
