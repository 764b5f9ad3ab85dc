"""Warming job bodies, and predictive warming through the core on a fake clock."""

import json

import pytest

from flaregate.cache.warming import parse_job
from flaregate.errors import GatewayError
from tests.unit.test_gateway import build

from .test_layer import ADMIN_VARS, HELLO, ask

BODY = {"model": "mock-1", "messages": HELLO}


def test_a_job_is_an_object_a_list_with_a_key_id_in_the_query_or_jsonl():
    job = {"key": "fg-k", "requests": [BODY], "headers": {"X-Flaregate-Cache-TTL": "60"}}
    assert parse_job(json.dumps(job).encode(), {}) == ({"key": "fg-k"}, [BODY], {"x-flaregate-cache-ttl": "60"})
    assert parse_job(json.dumps([BODY, BODY]).encode(), {"key_id": "key_1"}) == ({"key_id": "key_1"}, [BODY] * 2, {})
    jsonl = (json.dumps(BODY) + "\n\n" + json.dumps(BODY) + "\n").encode()
    assert parse_job(jsonl, {"key_id": "key_1"})[1] == [BODY, BODY]


@pytest.mark.parametrize("raw, query", [
    (b"\xff", {}), (b"{nope", {}), (b"[]", {"key_id": "k"}), (json.dumps([BODY]).encode(), {}),
    (json.dumps({"key": "a", "key_id": "b", "requests": [BODY]}).encode(), {}),
    (json.dumps({"key": "a", "requests": [BODY, 3]}).encode(), {}),
    (json.dumps({"key": "a", "requests": [BODY] * 1001}).encode(), {}),
    (json.dumps({"key": "a", "requests": [BODY], "headers": {"authorization": "x"}}).encode(), {}),
    (json.dumps({"key": "a", "requests": [BODY], "when": "now"}).encode(), {}),
])
def test_bad_job_bodies_are_400(raw, query):
    with pytest.raises(GatewayError) as caught:
        parse_job(raw, query)
    assert caught.value.status == 400 and caught.value.code == "invalid_warm_request"


async def test_predictive_warming_re_asks_a_popular_entry_before_it_expires_and_lets_an_unread_one_go():
    gateway, _, tasks = build({**ADMIN_VARS, "CACHE_PREDICTIVE_WARMING": "true",
                               "CACHE_PREDICTIVE_INTERVAL_SECONDS": "10"})
    clock = gateway.ports.clock
    ttl = [("x-flaregate-cache-ttl", "15")]
    popular, unread = [{"role": "user", "content": "popular"}], [{"role": "user", "content": "unread"}]

    async def status(messages):
        return (await gateway.handle(ask(messages=messages, headers=ttl))).headers["x-flaregate-cache"]

    assert [await status(popular), await status(popular), await status(unread)] == ["MISS", "HIT", "MISS"]
    clock.advance(11)  # the interval is over: this request starts a pass in the background
    assert await status(popular) == "HIT"
    await tasks.drain()
    assert gateway.predictive.stats() == {"enabled": True, "tracked": 1, "passes": 1, "rewarmed": 1}
    clock.advance(10)  # past the first answer's own expiry (15 s)
    assert await status(popular) == "HIT"  # the re-asked answer
    assert await status(unread) == "MISS"  # never hit, so never re-asked
