"""The three cache tiers through the real server (or the real Worker: FLAREGATE_TARGET=edge,
where the warm tier is the runtime's own Cache API, caches.default) and the real mock upstream."""

import re
import uuid

import httpx
import pytest

from tests.support.waiting import eventually

from .conftest import GATEWAY_KEY, run_gateway, upstream_env
from .test_cache import ADMIN_KEY, CHAT, admin_stats, upstream_calls

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}


def ask(server, content: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": content}]}
    response = httpx.post(server.base_url + CHAT, json=body, headers={**AUTH, **(headers or {})}, timeout=20)
    assert response.status_code == 200, response.text
    return response


def detail(response: httpx.Response) -> str | None:
    found = re.search(r"detail=(\w+)", response.headers.get("cache-status", ""))
    return found.group(1) if found else None


@pytest.fixture(scope="module")
def warm_only(upstream, tmp_path_factory):
    """Hot tier off: every hit has to come from the warm tier (or the cold one)."""
    env = upstream_env(upstream.base_url, FLAREGATE_ADMIN_KEY=ADMIN_KEY, CACHE_HOT_TTL_SECONDS="0")
    with run_gateway(tmp_path_factory.mktemp("warm-only"), env) as server:
        yield server


def test_with_hot_off_hits_are_served_from_the_warm_tier(warm_only, upstream):
    content = f"warm {uuid.uuid4().hex}"
    before = upstream_calls(upstream)
    first = ask(warm_only, content)
    assert first.headers["x-flaregate-cache"] == "MISS"
    # The warm write runs in the background (ctx.waitUntil on the edge): wait until it landed.
    again = eventually(lambda: ask(warm_only, content), lambda r: r.headers["x-flaregate-cache"] == "HIT")
    assert again.headers["x-flaregate-cache"] == "HIT" and detail(again) == "warm"
    assert [detail(ask(warm_only, content)) for _ in range(3)] == ["warm"] * 3
    assert again.json() == first.json()
    assert upstream_calls(upstream) - before == 1  # one upstream call for all of them
    stats = admin_stats(warm_only)
    assert stats["warm"]["hits"] >= 4 and stats["hot"]["entries"] == 0


def test_a_default_ttl_entry_never_writes_the_cold_tier_and_counts_a_kv_write_avoided(warm_only):
    # The default TTL (300 s) ends before the warm tier's lifetime (1 h): KV is not written.
    before = admin_stats(warm_only)["cold"]
    ask(warm_only, f"short {uuid.uuid4().hex}")
    stats = eventually(lambda: admin_stats(warm_only), lambda s: s["warm"]["writes"] > 0)
    assert stats["cold"]["writes_avoided"] == before["writes_avoided"] + 1
    assert stats["cold"]["writes"] == before["writes"]
    metrics = eventually(
        lambda: httpx.get(warm_only.base_url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text,
        lambda text: "flaregate_cache_kv_writes_avoided_total{" in text)
    avoided = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("flaregate_cache_kv_writes_avoided_total{")]
    assert sum(avoided) >= 1


def test_a_long_lived_entry_is_written_to_the_cold_tier_too(warm_only):
    before = admin_stats(warm_only)["cold"]["writes"]
    ask(warm_only, f"long {uuid.uuid4().hex}", {"x-flaregate-cache-ttl": "7200"})
    stats = eventually(lambda: admin_stats(warm_only), lambda s: s["cold"]["writes"] > before)
    assert stats["cold"]["writes"] == before + 1


@pytest.fixture(scope="module")
def cold_only(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, FLAREGATE_ADMIN_KEY=ADMIN_KEY, CACHE_HOT_TTL_SECONDS="0",
                       CACHE_WARM_TTL_SECONDS="0")
    with run_gateway(tmp_path_factory.mktemp("cold-only"), env) as server:
        yield server


def test_with_hot_and_warm_off_hits_come_from_the_cold_tier(cold_only, upstream):
    content = f"cold {uuid.uuid4().hex}"
    before = upstream_calls(upstream)
    ask(cold_only, content)
    again = eventually(lambda: ask(cold_only, content), lambda r: r.headers["x-flaregate-cache"] == "HIT")
    assert detail(again) == "cold" and upstream_calls(upstream) - before == 1
