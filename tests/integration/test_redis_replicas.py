"""Several gateway processes over one real redis-server: limits exact across replicas, one
shared cache, and the configured failure mode while Redis is away (local host only)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.integration.conftest import (
    ADMIN_KEY,
    GATEWAY_KEY,
    TARGET,
    run_local_gateway,
    upstream_env,
)
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.skipif(TARGET != "local", reason="Redis is the standalone host's backend; "
                                "the edge shares state through Durable Objects instead")

REPLICAS = 3
REQUESTS = 200
LIMIT = 50
POLICIES = {
    "token_bucket": {"algorithm": "token_bucket", "limit": LIMIT, "refill_per_second": 0.001},
    "sliding_window": {"algorithm": "sliding_window", "limit": LIMIT, "window_seconds": 3600},
    "fixed_window": {"algorithm": "fixed_window", "limit": LIMIT, "window_seconds": 3600},
}


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


def _replicas(stack: ExitStack, tmp_path, upstream, redis_url: str, **extra: str) -> list[str]:
    env = upstream_env(upstream.base_url, FLAREGATE_REDIS_URL=redis_url, CACHE_TTL_SECONDS="0", **extra)
    return [stack.enter_context(run_local_gateway(tmp_path / f"replica{i}", env)).base_url for i in range(REPLICAS)]


def _chat(model: str = "gpt-test", content: str = "hi", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def _spread(urls: list[str], body: dict, count: int) -> list[int]:
    """``count`` concurrent requests, round-robin over the replicas."""
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    limits = httpx.Limits(max_connections=REQUESTS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        replies = await asyncio.gather(*(
            client.post(urls[i % len(urls)] + "/v1/chat/completions", json=body, headers=headers)
            for i in range(count)))
    return [r.status_code for r in replies]


def _assert_exact(statuses: list[int], admissible: int) -> None:
    # failure_mode "closed": a limiter call that times out on an overloaded machine answers
    # 503 instead of admitting past the limit (fail open would admit on the in-process
    # fallback); without any such timeout the count is exact.
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses.count(200) <= admissible, statuses
    if 503 not in statuses:
        assert statuses.count(200) == admissible, statuses


@pytest.mark.parametrize("algorithm", sorted(POLICIES))
def test_limit_is_exact_across_three_replicas(algorithm, tmp_path, upstream, redis_server):
    policy = {"name": f"exact-{algorithm}", "unit": "requests", "failure_mode": "closed", **POLICIES[algorithm]}
    with ExitStack() as stack:
        urls = _replicas(stack, tmp_path, upstream, redis_server.url.replace("/0", f"/{len(algorithm) % 16}"),
                         FLAREGATE_RATE_LIMITS=json.dumps([policy]))
        statuses = asyncio.run(_spread(urls, _chat(), REQUESTS))
    _assert_exact(statuses, LIMIT)


def test_token_limit_is_exact_across_three_replicas(tmp_path, upstream, redis_server):
    # Each request reserves its max_tokens (10) plus its prompt estimate of a 500-token window,
    # and the answer refunds what it did not use: at most 500 tokens are ever reserved at once.
    policy = {"name": "tokens", "unit": "tokens", "algorithm": "fixed_window", "limit": LIMIT * 10,
              "window_seconds": 3600, "failure_mode": "closed"}
    with ExitStack() as stack:
        urls = _replicas(stack, tmp_path, upstream, redis_server.url.replace("/0", "/7"),
                         FLAREGATE_RATE_LIMITS=json.dumps([policy]))
        statuses = asyncio.run(_spread(urls, _chat(max_tokens=10), REQUESTS))
    assert set(statuses) <= {200, 429, 503}, statuses
    assert 0 < statuses.count(200) <= LIMIT, statuses


def test_cache_written_on_one_replica_hits_on_another(tmp_path, upstream, redis_server):
    with ExitStack() as stack:
        env = upstream_env(upstream.base_url, FLAREGATE_REDIS_URL=redis_server.url.replace("/0", "/8"),
                           CACHE_TTL_SECONDS="300")
        a, b = (stack.enter_context(run_local_gateway(tmp_path / n, env)).base_url for n in "ab")
        headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
        body = _chat(content="shared cache across replicas")
        first = httpx.post(a + "/v1/chat/completions", json=body, headers=headers, timeout=20)
        second = httpx.post(b + "/v1/chat/completions", json=body, headers=headers, timeout=20)
    assert first.status_code == second.status_code == 200
    assert "MISS" == first.headers["x-flaregate-cache"]
    assert second.headers["x-flaregate-cache"] == "HIT"
    assert second.json()["choices"] == first.json()["choices"]


def test_redis_restart_keeps_the_failure_mode_and_recovers(tmp_path, upstream, redis_server):
    # Fail closed: while Redis is away a request is refused with 503 (never another 5xx), and
    # once it is back the same replica admits again without a restart.
    # lease 0: every admission asks the store (with the default adaptive leases, units an
    # isolate already holds are still spent for up to a lease lifetime after the store goes).
    policy = {"name": "closed", "unit": "requests", "algorithm": "fixed_window", "limit": 1000,
              "window_seconds": 3600, "failure_mode": "closed", "lease": 0}
    with ExitStack() as stack:
        urls = _replicas(stack, tmp_path, upstream, redis_server.url.replace("/0", "/9"),
                         FLAREGATE_RATE_LIMITS=json.dumps([policy]))
        before = asyncio.run(_spread(urls, _chat(), 9))
        redis_server.stop()
        during = asyncio.run(_spread(urls, _chat(), 9))
        redis_server.start()
        after = asyncio.run(_spread(urls, _chat(), 9))
    assert before == [200] * 9
    assert during == [503] * 9
    assert after == [200] * 9


def test_workers_refuse_without_redis(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "flaregate", "serve", "--workers", "2", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "FLAREGATE_REDIS_URL" in done.stderr


def test_nonce_used_on_one_replica_is_refused_on_another(tmp_path, upstream, redis_server):
    from flaregate.security.signing import sign_request

    with ExitStack() as stack:
        env = upstream_env(upstream.base_url, FLAREGATE_REDIS_URL=redis_server.url.replace("/0", "/10"))
        a, b = (stack.enter_context(run_local_gateway(tmp_path / n, env)).base_url for n in "ab")
        headers = {"authorization": f"Bearer {ADMIN_KEY}", **sign_request(ADMIN_KEY, "GET", "/admin/keys")}
        first = httpx.get(a + "/admin/keys", headers=headers, timeout=20)
        replay = httpx.get(b + "/admin/keys", headers=headers, timeout=20)
        fresh = {"authorization": f"Bearer {ADMIN_KEY}", **sign_request(ADMIN_KEY, "GET", "/admin/keys")}
        other = httpx.get(b + "/admin/keys", headers=fresh, timeout=20)
    assert first.status_code == 200
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "signature_replayed"
    assert other.status_code == 200


def _requests_total(base_url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(base_url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=20).text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "flaregate_requests")
    return sum(s.value for s in family.samples if s.name.endswith("_total"))


def test_metrics_on_any_replica_count_every_replicas_requests(tmp_path, upstream, redis_server):
    with ExitStack() as stack:
        urls = _replicas(stack, tmp_path, upstream, redis_server.url.replace("/0", "/11"))
        statuses = asyncio.run(_spread(urls, _chat(), 30))  # 10 through each replica
        totals: list[float] = []
        deadline = time.monotonic() + 10  # events reach the hubs in batches within ~100 ms
        while time.monotonic() < deadline:
            totals = [_requests_total(url) for url in urls]
            if totals == [30.0] * REPLICAS:
                break
            time.sleep(0.2)
    assert statuses == [200] * 30
    assert totals == [30.0] * REPLICAS


def _admin(base_url: str, method: str, path: str, body: dict | None = None) -> httpx.Response:
    """A signed admin request (signing is required on /admin/; each nonce once)."""
    from flaregate.security.signing import sign_request

    raw = b"" if body is None else json.dumps(body).encode()
    headers = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json",
               **sign_request(ADMIN_KEY, method, path, raw)}
    return httpx.request(method, base_url + path, content=raw, headers=headers, timeout=20)


def _chat_as(base_url: str, key: str) -> httpx.Response:
    return httpx.post(base_url + "/v1/chat/completions", json=_chat(), timeout=20,
                      headers={"authorization": f"Bearer {key}"})


def test_a_key_created_on_one_replica_works_on_every_replica_and_a_revocation_refuses_everywhere_at_once(
        tmp_path, upstream, redis_server):
    with ExitStack() as stack:
        a, b, c = _replicas(stack, tmp_path, upstream, redis_server.url.replace("/0", "/12"))
        created = _admin(a, "POST", "/admin/keys", {"name": "shared", "allowed_models": ["gpt-test"]})
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["id"]
        # At once, with no wait: every replica finds it (and its policy) in Redis.
        used = [_chat_as(url, key).status_code for url in (b, c, a)]
        other_model = httpx.post(c + "/v1/chat/completions", json=_chat(model="mock-1"), timeout=20,
                                 headers={"authorization": f"Bearer {key}"})
        listed = [r["id"] for r in _admin(b, "GET", "/admin/keys").json()["data"]]
        revoked = _admin(a, "DELETE", f"/admin/keys/{key_id}")
        # b and c answered with this key a moment ago: any per-process cache would admit it now.
        after = [_chat_as(url, key) for url in (b, c, a)]
        again = _admin(c, "DELETE", f"/admin/keys/{key_id}")
    assert used == [200, 200, 200]
    assert other_model.status_code == 403 and other_model.json()["error"]["code"] == "model_not_allowed"
    assert key_id in listed
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert [r.status_code for r in after] == [401, 401, 401]
    assert all("revoked" in r.json()["error"]["message"] for r in after)
    # Revoking twice keeps the first revocation's time.
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]


def test_a_webhook_registered_on_one_replica_is_delivered_by_another(tmp_path, upstream, redis_server):
    from tests.integration.test_webhooks import Receiver

    with Receiver([]) as receiver, ExitStack() as stack:
        a, b = _replicas(stack, tmp_path, upstream, redis_server.url.replace("/0", "/13"),
                         WEBHOOK_ALLOW_PRIVATE_TARGETS="true")[:2]
        hook = _admin(a, "POST", "/admin/webhooks", {"url": receiver.url, "events": ["webhook.test"]})
        assert hook.status_code == 201, hook.text
        hook_id = hook.json()["id"]
        queued = _admin(b, "POST", f"/admin/webhooks/{hook_id}/test")
        receiver.wait_for(1)
        deliveries: list[dict] = []
        deadline = time.monotonic() + 10  # the delivery is logged just after the receiver answers
        while not deliveries and time.monotonic() < deadline:
            deliveries = _admin(a, "GET", f"/admin/webhooks/{hook_id}/deliveries").json()["data"]
            time.sleep(0.1)
        deleted = _admin(b, "DELETE", f"/admin/webhooks/{hook_id}")
        left = _admin(a, "GET", "/admin/webhooks").json()["data"]
    assert queued.status_code == 202
    assert json.loads(receiver.deliveries[0]["body"])["type"] == "webhook.test"
    assert [(d["event"], d["delivered"], d["status"]) for d in deliveries] == [("webhook.test", True, 200)]
    assert deleted.status_code == 200 and left == []


BUDGET_USD = 1.0
IN_PRICE, OUT_PRICE = 1000.0, 2000.0  # USD per 1M tokens: a few cents a request


def _spent(reply: dict) -> float:
    usage = reply["usage"]
    return (usage["prompt_tokens"] * IN_PRICE + usage["completion_tokens"] * OUT_PRICE) / 1e6


@pytest.mark.parametrize("budget_of", ["configured", "stored_key"])
def test_a_budget_is_never_overspent_across_three_replicas(budget_of, tmp_path, upstream, redis_server):
    # Each request reserves its estimated price under the budget and the answer settles it
    # to the real usage, in the partition every replica shares. "configured": a
    # FLAREGATE_BUDGETS budget (failing closed); "stored_key": the budget_usd of a key made
    # on one replica (failing open, the default: exact while Redis answers).
    routes = {"gpt-priced": [{"provider": "upstream", "input_price_per_1m": IN_PRICE,
                              "output_price_per_1m": OUT_PRICE}]}
    budget = {"name": "daily", "period": "day", "limit_usd": BUDGET_USD, "failure_mode": "closed"}
    body = _chat(model="gpt-priced", content="spend a little", max_tokens=10)

    async def burst(urls: list[str], headers: dict[str, str]) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=REQUESTS)) as client:
            return await asyncio.gather(*(client.post(urls[i % len(urls)] + "/v1/chat/completions", json=body,
                                                      headers=headers) for i in range(REQUESTS)))

    with ExitStack() as stack:
        budgets = [budget] if budget_of == "configured" else []
        urls = _replicas(stack, tmp_path, upstream, redis_server.url.replace("/0", f"/{6 - len(budgets)}"),
                         FLAREGATE_ROUTES=json.dumps(routes), FLAREGATE_BUDGETS=json.dumps(budgets))
        if budget_of == "configured":
            key, key_id, policy = GATEWAY_KEY, key_id_of(GATEWAY_KEY), "daily"
        else:
            made = _admin(urls[0], "POST", "/admin/keys", {"name": "metered", "budget_usd": BUDGET_USD}).json()
            key, key_id, policy = made["key"], made["id"], "key_budget"
        headers = {"authorization": f"Bearer {key}"}
        replies = asyncio.run(burst(urls, headers))
        # Then one at a time, round the replicas, until the budget refuses.
        for i in range(200):
            reply = httpx.post(urls[i % REPLICAS] + "/v1/chat/completions", json=body, headers=headers, timeout=20)
            replies.append(reply)
            if reply.status_code != 200:
                break
        usage = {row["policy"]: row for row in _admin(urls[1], "GET", f"/admin/ratelimits/{key_id}").json()["limits"]}
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {200, 429, 503}, statuses
    refusals = [r.json()["error"]["code"] for r in replies if r.status_code == 429]
    assert refusals and set(refusals) == {"budget_exceeded"}
    spent = sum(_spent(r.json()) for r in replies if r.status_code == 200)
    assert spent <= BUDGET_USD  # never over, whichever replicas the requests went through
    assert spent > BUDGET_USD - 0.05  # and the last refusal came within one request's price of it
    assert usage[policy]["used"] == pytest.approx(spent)  # every replica's settlement counted once


def key_id_of(key: str) -> str:
    import hashlib

    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def test_stored_keys_wait_for_redis_with_a_503_while_configured_keys_keep_working(tmp_path, upstream, redis_server):
    with ExitStack() as stack:
        a, b = _replicas(stack, tmp_path, upstream, redis_server.url.replace("/0", "/15"))[:2]
        key = _admin(a, "POST", "/admin/keys", {"name": "before"}).json()["key"]
        assert _chat_as(b, key).status_code == 200
        redis_server.stop()
        try:
            stored = _chat_as(b, key)
            configured = _chat_as(b, GATEWAY_KEY)
            listing = _admin(a, "GET", "/admin/keys")
        finally:
            redis_server.start()  # an empty Redis (the test server keeps nothing on disk)
        made = _admin(a, "POST", "/admin/keys", {"name": "after"})
        after = _chat_as(b, made.json()["key"])
    assert stored.status_code == 503 and stored.json()["error"]["code"] == "key_store_unavailable"
    assert stored.headers["retry-after"] == "1"
    assert configured.status_code == 200  # FLAREGATE_API_KEYS needs no store; no limit fails closed here
    assert listing.status_code == 503 and listing.json()["error"]["code"] == "key_store_unavailable"
    assert made.status_code == 201 and after.status_code == 200  # recovered without a restart


def test_without_configured_keys_the_first_replica_makes_the_one_key_every_replica_accepts(
        tmp_path, upstream, redis_server):
    import re

    env = upstream_env(upstream.base_url, FLAREGATE_REDIS_URL=redis_server.url.replace("/0", "/3"))
    del env["FLAREGATE_API_KEYS"]
    with ExitStack() as stack:
        a, b = (stack.enter_context(run_local_gateway(tmp_path / n, env)) for n in "ab")
        made = [re.findall(r"Created a gateway key[^:]*: (\S+)", s.log()) for s in (a, b)]
        key = (made[0] or made[1])[0]
        answers = [_chat_as(s.base_url, key).status_code for s in (a, b)]
    assert sorted(len(m) for m in made) == [0, 1]  # one key, by one replica
    assert answers == [200, 200]


def test_the_keys_command_manages_the_replicas_shared_store(tmp_path, upstream, redis_server):
    import subprocess
    import sys

    url = redis_server.url.replace("/0", "/4")

    def keys(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flaregate", "keys", *args, "--data-dir", str(tmp_path / "cli")],
                              capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "FLAREGATE_REDIS_URL": url})

    with ExitStack() as stack:
        a, b = _replicas(stack, tmp_path, upstream, url)[:2]
        created = keys("create", "--name", "cli")
        key_id, key = created.stdout.split()[:2]
        before = [_chat_as(url_, key).status_code for url_ in (a, b)]
        listed = keys("list")
        revoked = keys("revoke", key_id)
        after = [_chat_as(url_, key).status_code for url_ in (a, b)]
    assert created.returncode == 0 and before == [200, 200]
    assert key_id in listed.stdout and revoked.returncode == 0
    assert after == [401, 401]
    assert not (tmp_path / "cli" / "flaregate.sqlite3").exists()  # nothing went to a local store


def test_keys_and_webhooks_made_before_redis_move_into_it_revoked_ones_stay_revoked(tmp_path, upstream, redis_server):
    import subprocess
    import sys

    data = tmp_path / "was-alone"
    alone = upstream_env(upstream.base_url, WEBHOOK_ALLOW_PRIVATE_TARGETS="true")
    with run_local_gateway(data, alone) as server:
        kept = _admin(server.base_url, "POST", "/admin/keys", {"name": "kept"}).json()
        dropped = _admin(server.base_url, "POST", "/admin/keys", {"name": "dropped"}).json()
        assert _admin(server.base_url, "DELETE", f"/admin/keys/{dropped['id']}").status_code == 200
        hook = _admin(server.base_url, "POST", "/admin/webhooks", {"url": "http://127.0.0.1:9/hook"}).json()
    shared = upstream_env(upstream.base_url, FLAREGATE_REDIS_URL=redis_server.url.replace("/0", "/2"))
    with ExitStack() as stack:
        a = stack.enter_context(run_local_gateway(data, shared))  # the same data dir, now over Redis
        b = stack.enter_context(run_local_gateway(tmp_path / "other", shared))
        answers = [_chat_as(b.base_url, k["key"]).status_code for k in (kept, dropped)]
        hooks = [h["id"] for h in _admin(b.base_url, "GET", "/admin/webhooks").json()["data"]]
        moved_line = "Moved 2 gateway keys and 1 webhooks" in a.log()
    local = subprocess.run([sys.executable, "-m", "flaregate", "keys", "list", "--data-dir", str(data)],
                           capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert answers == [200, 401]
    assert hooks == [hook["id"]]
    assert moved_line
    assert local.returncode == 0 and local.stdout.strip() == ""  # gone from the file: none can come back
