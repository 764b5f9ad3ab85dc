"""Replicas over one real redis-server share the semantic index: an answer indexed by one
replica answers a paraphrase sent to another (local host only: the edge shares it through
the partition's Durable Object, tested in test_semantic_cache.py)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import openai
import pytest

from flaregate.security.signing import sign_request
from tests.integration.conftest import (
    ADMIN_KEY,
    GATEWAY_KEY,
    TARGET,
    run_local_gateway,
    upstream_env,
)
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.skipif(TARGET != "local", reason="Redis is the standalone host's backend; "
                                "the edge shares the index through Durable Objects instead")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _stats(url: str) -> dict:
    path = "/admin/cache/stats"
    headers = {"authorization": f"Bearer {ADMIN_KEY}", **sign_request(ADMIN_KEY, "GET", path, b"")}
    return httpx.get(url + path, headers=headers, timeout=30).json().get("semantic", {})


def test_replicas_share_the_index(upstream, redis_server, tmp_path):
    routes = {"bow-embed": ["upstream/bow-embed"],
              "gpt-sem": {"targets": ["upstream"],
                          "semantic_cache": {"threshold": 0.7, "embeddings": "bow-embed"}}}
    env = upstream_env(upstream.base_url, FLAREGATE_REDIS_URL=redis_server.url, CACHE_TTL_SECONDS="300",
                       FLAREGATE_ROUTES=json.dumps(routes))
    with ExitStack() as stack:
        urls = [stack.enter_context(run_local_gateway(tmp_path / f"replica{i}", env)).base_url for i in range(2)]
        clients = [openai.OpenAI(base_url=u + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=30) for u in urls]
        t = uuid.uuid4().hex[:6]
        first = clients[0].chat.completions.with_raw_response.create(
            model="gpt-sem", messages=[{"role": "user", "content": f"How do vaccines train the immune system {t}?"}])
        assert "hit" not in first.headers["cache-status"]
        for _ in range(100):
            if _stats(urls[0]).get("indexed", 0) >= 1:
                break
            time.sleep(0.05)
        second = clients[1].chat.completions.with_raw_response.create(
            model="gpt-sem",
            messages=[{"role": "user", "content": f"How do vaccines train the immune system please {t}?"}])
        assert "detail=semantic" in second.headers["cache-status"]
        assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
