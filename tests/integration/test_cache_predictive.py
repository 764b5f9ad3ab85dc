"""Predictive warming: a popular entry is asked again before it expires, so it keeps being a
hit past its own TTL; an entry no one reads is left to expire. Both hosts."""

import time
import uuid

import httpx
import pytest

from .conftest import GATEWAY_KEY, run_gateway, upstream_env
from .test_cache import ADMIN_KEY, CHAT, admin_stats

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
TTL = 3  # seconds: the entry's own life


@pytest.fixture(scope="module")
def predictive(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, FLAREGATE_ADMIN_KEY=ADMIN_KEY, CACHE_PREDICTIVE_WARMING="true",
                       CACHE_PREDICTIVE_INTERVAL_SECONDS="1", CACHE_PREDICTIVE_TOP_N="5")
    with run_gateway(tmp_path_factory.mktemp("predictive"), env) as server:
        yield server


def ask(server, content: str) -> str:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": content}]}
    response = httpx.post(server.base_url + CHAT, json=body, headers={**AUTH, "x-flaregate-cache-ttl": str(TTL)},
                          timeout=20)
    assert response.status_code == 200, response.text
    return response.headers["x-flaregate-cache"]


def test_a_popular_entry_stays_cached_past_its_ttl_and_an_unread_one_expires(predictive, upstream):
    popular, unread = f"popular {uuid.uuid4().hex}", f"unread {uuid.uuid4().hex}"
    assert ask(predictive, popular) == "MISS" and ask(predictive, unread) == "MISS"
    started = time.monotonic()
    seen = []
    while time.monotonic() - started < 3 * TTL:  # three lifetimes of the entry
        seen.append(ask(predictive, popular))
        time.sleep(0.25)
    assert set(seen) == {"HIT"}  # re-warmed before each expiry: never a miss
    stats = admin_stats(predictive)["predictive"]
    assert stats["rewarmed"] >= 2 and stats["passes"] >= 2
    assert ask(predictive, unread) == "MISS"  # never hit, so never re-warmed: it expired
