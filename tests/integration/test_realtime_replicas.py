"""Realtime state across replicas of the standalone server over one real redis-server: a
key's session slots are counted across replicas, and an ephemeral secret minted on one is
usable once on any."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack

import openai
import pytest
from websockets.exceptions import InvalidStatus

from tests.support.redis_server import RedisServer

from .conftest import GATEWAY_KEY, TARGET, run_local_gateway, upstream_env

pytestmark = pytest.mark.skipif(TARGET != "local", reason="Redis is the standalone host's backend; "
                                "the edge keeps this state in the security store object")


@pytest.fixture(scope="module")
def replicas(upstream, tmp_path_factory) -> Iterator[list[str]]:
    try:
        redis = RedisServer(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    redis.start()
    env = upstream_env(upstream.base_url, FLAREGATE_REDIS_URL=redis.url.replace("/0", "/11"),
                       REALTIME_MAX_SESSIONS_PER_KEY="1", CACHE_TTL_SECONDS="0")
    try:
        with ExitStack() as stack:
            yield [stack.enter_context(run_local_gateway(tmp_path_factory.mktemp(f"replica{i}"), env)).base_url
                   for i in range(2)]
    finally:
        redis.stop()


def sdk(base_url: str, key: str = GATEWAY_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=20)


def test_a_keys_session_slots_are_counted_across_replicas(replicas):
    async def flow() -> int:
        first = await sdk(replicas[0]).realtime.connect(model="gpt-test").enter()
        try:
            with pytest.raises(InvalidStatus) as refused:
                await sdk(replicas[1]).realtime.connect(model="gpt-test").enter()
        finally:
            await first.close()
        return refused.value.response.status_code

    assert asyncio.run(flow()) == 429


def test_a_secret_minted_on_one_replica_is_used_once_on_any(replicas):
    async def flow() -> tuple[str, int]:
        minted = await sdk(replicas[0]).realtime.client_secrets.create(session={"type": "realtime",
                                                                                "model": "gpt-test"})
        for _ in range(50):  # the slot of the previous test's session may still be on its way back
            try:
                conn = await sdk(replicas[1], minted.value).realtime.connect(model="gpt-test").enter()
                break
            except InvalidStatus as exc:
                if exc.response.status_code != 429:
                    raise
                await asyncio.sleep(0.1)
        first = (await conn.recv()).type
        await conn.close()
        with pytest.raises(InvalidStatus) as again:
            await sdk(replicas[0], minted.value).realtime.connect(model="gpt-test").enter()
        return first, again.value.response.status_code

    first, status = asyncio.run(flow())
    assert first == "session.created" and status == 401
