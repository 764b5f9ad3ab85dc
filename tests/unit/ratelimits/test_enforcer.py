"""Limits as the gateway applies them: scopes, headers, reservations, budgets, degradation, admin."""

import json
from urllib.parse import urlencode

import pytest

from flaregate.accounting import StreamUsage, estimate_tokens
from flaregate.config import settings_from_vars
from flaregate.gateway import Gateway
from flaregate.hosts.local.runtime import LocalHubClient, LocalRateLimiterClient
from flaregate.http import Headers, Request
from flaregate.hub.aggregator import MetricsHub
from flaregate.ports import Ports, UpstreamError
from flaregate.providers.mock import StaticResponse
from flaregate.ratelimits.headers import ietf_headers
from flaregate.ratelimits.limiter import RateLimiter
from flaregate.ratelimits.policies import RateLimitPolicy
from flaregate.ratelimits.scope import address
from flaregate.security.keys import key_id
from flaregate.security.signing import sign_request
from tests.support.fakes import (
    FakeClock,
    InlineTasks,
    MemoryKV,
    MemorySql,
    RecordingBroadcaster,
    RecordingScheduler,
)

KEY, OTHER_KEY, ADMIN = "gw-key-one", "gw-key-two", "admin-secret-xyz"


class BrokenLimiter:
    """A rate-limiter client whose objects cannot be reached."""

    def __getattr__(self, name):
        async def fail(*args, **kwargs):
            raise ConnectionError("durable object unreachable")
        return fail


class Transport:
    def __init__(self, *script):
        self.script = list(script)

    async def send(self, method, url, headers, body, timeout):
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def completion(prompt=7, completion=5):
    body = {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}
    return StaticResponse(200, {"content-type": "application/json"}, [json.dumps(body).encode()])


def build(vars=None, *, limiter=None, transport=None):
    clock = FakeClock()
    sql = MemorySql()
    hub = MetricsHub(sql, clock, RecordingBroadcaster(), RecordingScheduler())
    tasks = InlineTasks()
    client = limiter or LocalRateLimiterClient(RateLimiter(sql, clock))
    ports = Ports(clock=clock, cache=MemoryKV(clock), upstream=transport or Transport(), tasks=tasks,
                  rate_limiter=client, metrics_hub=LocalHubClient(hub))
    providers = [{"name": "mock", "kind": "mock"}, {"name": "up", "base_url": "http://up.invalid/v1"}]
    routes = {"mock-1": ["mock"],
              "priced": [{"provider": "up", "model": "m", "input_price_per_1m": 1000, "output_price_per_1m": 2000}]}
    base = {"FLAREGATE_API_KEYS": f"{KEY},{OTHER_KEY}", "FLAREGATE_PROVIDERS": json.dumps(providers),
            "FLAREGATE_ROUTES": json.dumps(routes), "CACHE_TTL_SECONDS": "0", "FLAREGATE_ADMIN_KEY": ADMIN,
            "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
            "RATE_LIMIT_CAPACITY": "1000", "RATE_LIMIT_REFILL_PER_SECOND": "1"}
    settings = settings_from_vars({**base, **(vars or {})})
    return Gateway(settings, ports), hub, tasks, clock


def policies(*items):
    return {"FLAREGATE_RATE_LIMITS": json.dumps(list(items))}


def chat(body=None, *, key=KEY, ip="203.0.113.7", headers=()):
    payload = json.dumps(body or {"model": "mock-1", "messages": [{"role": "user", "content": "hello"}]}).encode()
    hs = [("content-type", "application/json"), ("authorization", f"Bearer {key}"), *headers]
    return Request("POST", "/v1/chat/completions", Headers(hs), payload, client_ip=ip)


def error(response):
    return json.loads(response.body)["error"]


# -- scope ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "partition"),
    [
        ("203.0.113.77", "ip:203.0.113.0"),
        ("2001:db8:abcd:1234::1", "ip:2001:db8:abcd::"),
        ("fe80::1%eth0", "ip:fe80::"),
        ("::ffff:198.51.100.9", "ip:198.51.100.0"),
        ("not an address", "ip:unknown"),
        (None, "ip:unknown"),
    ],
)
def test_client_addresses_count_by_their_network_never_the_address(raw, partition):
    policy = RateLimitPolicy(name="p", algorithm="fixed_window", limit=1, window_seconds=1, scope="ip")
    assert address(policy, "key_1", raw, "gpt", Headers()) == (partition, "p")


def test_addresses_come_from_the_servers_view_and_users_stay_inside_their_key():
    def policy(scope, **kw):
        return RateLimitPolicy(name="p", algorithm="fixed_window", limit=1, window_seconds=1, scope=scope, **kw)

    headers = Headers({"x-user": "alice@example.com", "x-forwarded-for": "192.0.2.1"})
    assert address(policy("key"), "key_1", "203.0.113.7", "gpt", headers) == ("key:key_1", "p")
    assert address(policy("ip"), "key_1", "203.0.113.7", "gpt", headers) == ("ip:203.0.113.0", "p")
    assert address(policy("model"), "key_1", None, "gpt-4o", headers) == ("model:gpt-4o", "p")
    assert address(policy("key+model"), "key_1", None, "a b|c", headers)[1].startswith("p|model:h:")
    partition, row = address(policy(["user"], user_header="x-user"), "key_1", None, "gpt", headers)
    assert partition == "key:key_1" and row.startswith("p|user:") and "alice" not in row
    assert address(policy(["user"], user_header="x-user"), "key_1", None, "gpt", Headers())[1] == "p|user:-"


def test_mcp_tool_calls_count_per_server_or_per_tool_and_tool_policies_skip_chat():
    def policy(scope, **kw):
        return RateLimitPolicy(name="p", algorithm="fixed_window", limit=1, window_seconds=1, scope=scope, **kw)

    model, tool = "mcp:github.search", "github.search"
    assert address(policy("mcp_server"), "key_1", None, model, Headers(), tool=tool) == ("mcp:github", "p")
    assert address(policy("mcp_tool"), "key_1", None, model, Headers(), tool=tool) == ("mcp:github.search", "p")
    assert address(policy("key+mcp_server"), "key_1", None, model, Headers(), tool=tool) == ("key:key_1", "p|mcp:github")
    assert address(policy("key+mcp_tool+mcp_server"), "key_1", None, model, Headers(), tool=tool)[1] == \
        "p|mcp:github.search"
    assert address(policy("ip+mcp_tool"), "key_1", "203.0.113.7", model, Headers(), tool=tool) == \
        ("ip:203.0.113.0", "p|mcp:github.search")
    assert address(policy("team+mcp_tool"), "key_1", None, model, Headers(), "team_9", tool=tool) == \
        ("team:team_9", "p|mcp:github.search")
    assert policy("mcp_server").tool_calls_only and policy("key", mcp_tools=["github.*"]).tool_calls_only
    assert not policy("key+model").tool_calls_only
    narrowed = policy("key", mcp_tools=["github.create_*"])
    assert narrowed.counts_tool("github.create_issue") and not narrowed.counts_tool("github.search")
    with pytest.raises(ValueError):
        policy("key", mcp_tools=[])


async def test_tool_call_policies_never_count_a_chat_request():
    gateway, *_ = build(policies({"name": "tools", "algorithm": "fixed_window", "limit": 1, "window_seconds": 60,
                                  "mcp_tools": ["*"]},
                                 {"name": "per-server", "algorithm": "fixed_window", "limit": 1, "window_seconds": 60,
                                  "scope": "mcp_server"}))
    assert [(await gateway.handle(chat())).status for _ in range(3)] == [200, 200, 200]
    limits = gateway.ratelimits
    names = [p.name for p in limits.policies_for(limits_principal(KEY))]
    assert "tools" not in names and "per-server" not in names and "default" in names
    assert {"tools", "per-server", "default"} <= {p.name for p in limits.policies_for(limits_principal(KEY), "a.b")}


def limits_principal(key):
    from flaregate.security.access import Principal

    return Principal(key_id(key), "config")


async def test_headers_a_client_sends_do_not_change_whose_limit_it_uses():
    gateway, *_ = build({"RATE_LIMIT_CAPACITY": "3", "RATE_LIMIT_REFILL_PER_SECOND": "0.001"})
    tricks = [[], [("x-forwarded-for", "192.0.2.1")], [("x-user-id", "someone-else")], [("cf-connecting-ip", "192.0.2.9")]]
    responses = [await gateway.handle(chat(headers=h)) for h in tricks]
    assert [r.status for r in responses] == [200, 200, 200, 429]
    assert (await gateway.handle(chat(key=OTHER_KEY))).status == 200  # another key, its own bucket


async def test_a_user_scope_splits_a_key_and_never_crosses_into_another_key():
    gateway, *_ = build(policies({"name": "per-user", "algorithm": "fixed_window", "limit": 1,
                                  "window_seconds": 60, "scope": "user", "user_header": "x-user-id"}))
    alice = [("x-user-id", "alice")]
    assert (await gateway.handle(chat(headers=alice))).status == 200
    assert (await gateway.handle(chat(headers=alice))).status == 429
    assert (await gateway.handle(chat(headers=[("x-user-id", "bob")]))).status == 200
    assert (await gateway.handle(chat(key=OTHER_KEY, headers=alice))).status == 200


# -- headers -------------------------------------------------------------------------------
async def test_every_response_carries_openai_and_ietf_headers_and_a_429_retry_after():
    gateway, hub, tasks, _ = build({"RATE_LIMIT_CAPACITY": "2", "RATE_LIMIT_REFILL_PER_SECOND": "0.01"})
    first, second, third = [await gateway.handle(chat()) for _ in range(3)]
    assert first.headers["ratelimit-policy"] == '"default";q=2;w=200'
    assert first.headers["ratelimit"] == '"default";r=1;t=100'
    assert second.headers["ratelimit"] == '"default";r=0;t=200'
    assert third.status == 429 and third.headers["retry-after"] == "100"
    assert third.headers["ratelimit"] == '"default";r=0;t=100'  # t never beyond Retry-After
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert error(third)["type"] == "rate_limit_error" and error(third)["code"] == "rate_limit_exceeded"
    await tasks.drain()
    assert hub.snapshot()["totals"]["rate_limited"] == 1


def test_ietf_headers_list_request_policies_only():
    results = [
        {"policy": "rpm", "unit": "requests", "limit": 60, "remaining": 59, "allowed": True,
         "window_seconds": 60, "reset_seconds": 0.4, "retry_after_seconds": 0},
        {"policy": "tpm", "unit": "tokens", "limit": 1000, "remaining": 10, "allowed": True,
         "window_seconds": 60, "reset_seconds": 3, "retry_after_seconds": 0},
    ]
    assert ietf_headers(results) == {"ratelimit-policy": '"rpm";q=60;w=60', "ratelimit": '"rpm";r=59;t=1'}


# -- tokens ----------------------------------------------------------------------------------
TPM = {"name": "tpm", "algorithm": "fixed_window", "unit": "tokens", "limit": 10000, "window_seconds": 3600}


def test_the_estimate_reserves_the_prompt_and_the_allowed_completion():
    body = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50, "n": 2}
    estimate = estimate_tokens(body)
    assert estimate.prompt_tokens >= 100 and estimate.completion_tokens == 100
    assert estimate_tokens({"messages": []}).completion_tokens == 256


async def test_reservation_is_reconciled_to_the_real_usage():
    transport = Transport(completion(7, 5), completion(20, 30))
    gateway, *_ = build(policies(TPM), transport=transport)
    body = {"model": "priced", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 500}
    first = await gateway.handle(chat(body))
    second = await gateway.handle(chat(body))
    assert first.headers["x-ratelimit-limit-tokens"] == "10000"
    assert first.headers["x-ratelimit-remaining-tokens"] == str(10000 - 12)
    assert second.headers["x-ratelimit-remaining-tokens"] == str(10000 - 12 - 50)


async def test_a_failed_upstream_call_refunds_the_reservation():
    transport = Transport(UpstreamError("refused"), completion(1, 1))
    gateway, *_ = build({**policies(TPM), "UPSTREAM_MAX_ATTEMPTS": "1"}, transport=transport)  # no retry
    body = {"model": "priced", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 500}
    failed = await gateway.handle(chat(body))
    assert failed.status == 502
    assert (await gateway.handle(chat(body))).headers["x-ratelimit-remaining-tokens"] == str(10000 - 2)


async def test_a_stream_settles_with_its_usage_chunk_when_it_ends():
    gateway, _, tasks, _ = build(policies(TPM))
    body = {"model": "mock-1", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 900,
            "messages": [{"role": "user", "content": "one two three"}]}
    response = await gateway.handle(chat(body))
    text = b"".join([c async for c in response.body])
    usage = StreamUsage()
    usage.feed(text)
    real = usage.usage().total
    await tasks.drain()
    after = await gateway.handle(chat({"model": "mock-1", "max_tokens": 1,
                                       "messages": [{"role": "user", "content": "x"}]}))
    used_by_second = 1 + 5  # the mock counts words: "x", then "Flaregate mock reply to: x"
    assert after.headers["x-ratelimit-remaining-tokens"] == str(10000 - real - used_by_second)


async def test_a_request_larger_than_a_token_limit_is_told_so():
    gateway, *_ = build(policies({**TPM, "limit": 100}))
    response = await gateway.handle(chat({"model": "mock-1", "max_tokens": 5000,
                                          "messages": [{"role": "user", "content": "hi"}]}))
    assert response.status == 429 and "lower max_tokens" in error(response)["message"]


# -- budgets ---------------------------------------------------------------------------------
async def test_an_exhausted_budget_answers_429_insufficient_quota():
    budget = {"FLAREGATE_BUDGETS": json.dumps([{"name": "daily", "period": "day", "limit_usd": 0.1}])}
    transport = Transport(*[completion(10, 10) for _ in range(10)])
    gateway, *_ = build(budget, transport=transport)
    body = {"model": "priced", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    # Each call really costs 10 x 0.001 + 10 x 0.002 = 0.03 USD; the estimate is a bit more.
    statuses = [(await gateway.handle(chat(body))) for _ in range(5)]
    assert [r.status for r in statuses][:3] == [200, 200, 200]
    refused = statuses[3]
    assert refused.status == 429
    assert error(refused)["type"] == "insufficient_quota" and error(refused)["code"] == "budget_exceeded"
    assert "daily" in error(refused)["message"]
    assert 0 < int(refused.headers["retry-after"]) <= 86400 and refused.headers["x-should-retry"] == "false"
    assert (await gateway.handle(chat(body, key=OTHER_KEY))).status == 200  # per key
    assert (await gateway.handle(chat())).status == 200  # an unpriced route is outside budgets


# -- several partitions, all or nothing -----------------------------------------------------
async def test_what_one_partition_admitted_is_given_back_when_another_refuses():
    gateway, *_ = build({"RATE_LIMIT_CAPACITY": "5", "RATE_LIMIT_REFILL_PER_SECOND": "0.001",
                         **policies({"name": "per-net", "algorithm": "fixed_window", "limit": 1,
                                     "window_seconds": 60, "scope": "ip"})})
    assert (await gateway.handle(chat(ip="198.51.100.1"))).status == 200
    refused = await gateway.handle(chat(ip="198.51.100.2"))  # same /24
    assert refused.status == 429 and refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert '"default";r=4' in refused.headers["ratelimit"]  # as it stands after the give-back
    other_net = await gateway.handle(chat(ip="192.0.2.1"))
    # The refused request took nothing from the key's bucket: 5 - 2 admitted = 3 left.
    assert other_net.status == 200
    assert '"default";r=3' in other_net.headers["ratelimit"]


# -- degradation -----------------------------------------------------------------------------
async def test_fail_open_falls_back_to_an_in_isolate_limiter_and_tells_the_hub():
    gateway, hub, tasks, _ = build({"RATE_LIMIT_CAPACITY": "2", "RATE_LIMIT_REFILL_PER_SECOND": "0.001"},
                                   limiter=BrokenLimiter())
    statuses = [(await gateway.handle(chat())).status for _ in range(3)]
    assert statuses == [200, 200, 429]  # still limited, by the fallback
    await tasks.drain()
    assert hub.snapshot()["totals"]["requests"] == 3  # the degradation event is not a request
    state = hub._sql.exec("SELECT value FROM hub_state WHERE name = 'event:ratelimit_degraded'")
    assert state == [{"value": 1}]  # reported once, not once per request


async def test_fail_closed_refuses_with_503_and_retry_after():
    gateway, *_ = build(policies({"name": "strict", "algorithm": "sliding_window", "limit": 100,
                                  "window_seconds": 60, "failure_mode": "closed"}), limiter=BrokenLimiter())
    response = await gateway.handle(chat())
    assert response.status == 503 and response.headers["retry-after"] == "1"
    assert error(response)["code"] == "rate_limiter_unavailable" and "'strict'" in error(response)["message"]


async def test_a_money_budget_fails_closed_by_default_while_a_request_limit_fails_open():
    gateway, *_ = build({"RATE_LIMIT_CAPACITY": "5", "RATE_LIMIT_REFILL_PER_SECOND": "0.001",
                         "FLAREGATE_BUDGETS": json.dumps([{"name": "monthly", "period": "month", "limit_usd": 10}])},
                        limiter=BrokenLimiter(), transport=Transport(completion(10, 10)))
    body = {"model": "priced", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    response = await gateway.handle(chat(body))
    assert response.status == 503  # money is not spent blind
    assert "'monthly'" in error(response)["message"] and "'default'" not in error(response)["message"]


# -- admin -----------------------------------------------------------------------------------
def admin(method, key, token=ADMIN, query=None, sign=True):
    path = f"/admin/ratelimits/{key}"
    headers = {"authorization": f"Bearer {token}"} if token else {}
    raw_query = urlencode(query or {})
    if sign:  # /admin/ requires signed requests by default (SIGNED_ROUTES); the query is signed too
        signed = f"{path}?{raw_query}" if raw_query else path
        headers.update(sign_request(ADMIN, method, signed, b"", timestamp=int(FakeClock().now())))
    return Request(method, path, Headers(headers), b"", query or {}, raw_query=raw_query)


async def test_admin_reads_and_resets_a_keys_usage():
    gateway, *_ = build({"RATE_LIMIT_CAPACITY": "3", "RATE_LIMIT_REFILL_PER_SECOND": "0.001", **policies(TPM)})
    for _ in range(3):
        await gateway.handle(chat())
    assert (await gateway.handle(chat())).status == 429
    ident = key_id(KEY)
    usage = json.loads((await gateway.handle(admin("GET", ident))).body)
    by_policy = {u["policy"]: u for u in usage["limits"]}
    assert by_policy["default"]["used"] == 3 and by_policy["default"]["remaining"] == 0
    assert by_policy["tpm"]["unit"] == "tokens" and by_policy["tpm"]["used"] > 0
    reset = json.loads((await gateway.handle(admin("DELETE", ident, query={"policy": "default"}))).body)
    assert reset["reset"] == 1
    assert (await gateway.handle(chat())).status == 200


@pytest.mark.parametrize(
    ("request_", "status", "code"),
    [
        (admin("GET", key_id(KEY), token=None), 401, "invalid_admin_key"),
        (admin("GET", key_id(KEY), sign=False), 401, "signature_required"),
        (admin("GET", key_id(KEY), token=KEY), 401, "invalid_admin_key"),
        (admin("GET", "key_nothex"), 404, "invalid_key_id"),
        (admin("GET", key_id(KEY) + "/x"), 404, "invalid_key_id"),
        (admin("POST", key_id(KEY)), 405, "method_not_allowed"),
        (admin("DELETE", key_id(KEY), query={"policy": "a|b"}), 400, "invalid_value"),
    ],
)
async def test_admin_refuses_bad_requests(request_, status, code):
    gateway, *_ = build()
    response = await gateway.handle(request_)
    assert response.status == status and error(response)["code"] == code


async def test_admin_is_disabled_without_an_admin_key():
    gateway, *_ = build({"FLAREGATE_ADMIN_KEY": "", "SIGNED_ROUTES": ""})
    response = await gateway.handle(admin("GET", key_id(KEY)))
    assert response.status == 403 and error(response)["code"] == "admin_disabled"


# -- stored keys: a named policy, a budget -------------------------------------------------
async def test_a_stored_key_is_held_to_the_policy_it_names_and_to_its_own_budget():
    from tests.support.security import SecureRig, chat_request

    gold = {"name": "gold", "algorithm": "fixed_window", "limit": 3, "window_seconds": 60, "applies_to": "named_keys"}
    priced = {"mock-1": [{"provider": "mock", "input_price_per_1m": 1e6, "output_price_per_1m": 1e6}]}  # $1/token
    rig = SecureRig({"FLAREGATE_RATE_LIMITS": json.dumps([gold]), "FLAREGATE_ROUTES": json.dumps(priced),
                     "RATE_LIMIT_CAPACITY": "1", "RATE_LIMIT_REFILL_PER_SECOND": "0.001", "CACHE_TTL_SECONDS": "0"})
    emitted = []
    rig.gateway.webhooks.emit = lambda kind, data, **kw: emitted.append((kind, data))
    plain_key = (await rig.create_key())["key"]
    gold_key = (await rig.create_key(rate_limit_policy="gold"))["key"]
    thrifty = (await rig.create_key(budget_usd=20, rate_limit_policy="gold"))["key"]

    def statuses(key, n):
        return [rig.gateway.handle(chat_request(key)) for _ in range(n)]

    def small(key):
        return chat({"model": "mock-1", "max_tokens": 1, "messages": [{"role": "user", "content": "hello"}]}, key=key)

    assert [(await r).status for r in statuses(plain_key, 2)] == [200, 429]  # the default: 1
    gold_answers = [await r for r in statuses(gold_key, 4)]
    assert [r.status for r in gold_answers] == [200, 200, 200, 429]  # gold replaces the default
    assert '"gold";q=3' in gold_answers[0].headers["ratelimit-policy"]
    assert '"default"' not in gold_answers[0].headers["ratelimit-policy"]
    # 20 USD a month: each call really costs 6 tokens = 6 USD, and reserves a bit more.
    spent = [await rig.gateway.handle(small(thrifty)) for _ in range(3)]
    assert [r.status for r in spent] == [200, 200, 429]
    refused = spent[-1]
    assert error(refused)["type"] == "insufficient_quota" and error(refused)["code"] == "budget_exceeded"
    assert "'key_budget'" in error(refused)["message"] and "month" in error(refused)["message"]
    assert ("budget.exceeded", {"key_id": key_id(thrifty), "budget": "key_budget", "limit_usd": 20,
                                "period": "month"}) in emitted
    assert any(kind == "rate_limit.saturated" for kind, _ in emitted)


def test_the_stored_key_budget_name_is_reserved():
    from flaregate.config import ConfigError

    with pytest.raises(ConfigError, match="reserved"):
        settings_from_vars({"FLAREGATE_BUDGETS": '[{"name": "key_budget", "period": "day", "limit_usd": 1}]'})


async def test_a_cache_hit_costs_no_tokens():
    gateway, *_ = build({**policies(TPM), "CACHE_TTL_SECONDS": "60"})
    body = {"model": "mock-1", "max_tokens": 300, "messages": [{"role": "user", "content": "same again"}]}
    first, second = await gateway.handle(chat(body)), await gateway.handle(chat(body))
    assert (first.headers["x-flaregate-cache"], second.headers["x-flaregate-cache"]) == ("MISS", "HIT")
    spent = json.loads(first.body)["usage"]["total_tokens"]
    assert first.headers["x-ratelimit-remaining-tokens"] == str(10000 - spent)
    assert second.headers["x-ratelimit-remaining-tokens"] == str(10000 - spent)  # the estimate went back
