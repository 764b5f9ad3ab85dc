"""Rules read the route a request resolves to, never the alias the client named, and nothing
a client chose is recorded before it is authenticated and routed (both hosts).

The attacks: a conditional alias whose default is a priced route was never charged to a
budget (its own price is 0), reached routes the key may not use and escaped the route's
guardrail policy; unauthenticated requests with made-up model names grew /metrics."""

from __future__ import annotations

import json
import secrets
import time

import httpx
import openai
import pytest

from flaregate.security.signing import sign_request

from .conftest import ADMIN_KEY, GATEWAY_KEY, run_gateway, upstream_env

BUDGET_KEY = "fg-test-resolved-budget-key-123456"
ROUTES = {
    "gpt-priced": [{"provider": "upstream", "input_price_per_1m": 1000, "output_price_per_1m": 2000}],
    "mock-1": ["mock"],
}
CONDITIONAL = {"smart": {"default": "gpt-priced", "branches": [
    {"when": {"field": "metadata.plan", "op": "eq", "value": "free"}, "route": "mock-1"}]}}
GUARDRAILS = {"policies": {"deny": {"deny_words": ["project x"]}}, "routes": {"gpt-priced": "deny"}}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    env = upstream_env(
        upstream.base_url,
        FLAREGATE_API_KEYS=f"{GATEWAY_KEY},{BUDGET_KEY}",
        FLAREGATE_ROUTES=json.dumps(ROUTES),
        FLAREGATE_CONDITIONAL_ROUTES=json.dumps(CONDITIONAL),
        FLAREGATE_BUDGETS=json.dumps([{"name": "daily", "period": "day", "limit_usd": 0.2}]),
        FLAREGATE_GUARDRAILS=json.dumps(GUARDRAILS),
        FLAREGATE_ADMIN_KEY=ADMIN_KEY,
        CACHE_TTL_SECONDS="0",
        AUTH_FAILURE_LIMIT="1000",  # 40 bad keys from one network on purpose: not the throttle's test
    )
    with run_gateway(tmp_path_factory.mktemp("resolved"), env) as gw:
        yield gw


def sdk(server, key=GATEWAY_KEY, tags=None) -> openai.OpenAI:
    headers = {"x-flaregate-metadata": json.dumps(tags)} if tags else None
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=20,
                         default_headers=headers)


def test_a_conditional_alias_is_charged_the_price_of_the_route_it_resolves_to(server):
    client = sdk(server, BUDGET_KEY)
    admitted = 0
    for _ in range(40):  # each call costs a few cents through the priced default; the budget is 0.20 USD
        try:
            client.chat.completions.create(model="smart", max_tokens=10,
                                           messages=[{"role": "user", "content": "spend a little"}])
            admitted += 1
        except openai.RateLimitError as exc:
            assert exc.body["code"] == "budget_exceeded"
            break
    else:
        pytest.fail("the alias was never charged: 40 of 40 admitted past a 0.20 USD budget")
    assert 0 < admitted < 40
    # The budget is one: the route itself is refused now too.
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-priced", max_tokens=10,
                                       messages=[{"role": "user", "content": "direct"}])


def _stored_key(server, policy: dict) -> str:
    raw = json.dumps({"name": "narrow", **policy}).encode()
    created = httpx.post(server.base_url + "/admin/keys", content=raw, timeout=10, headers={
        **ADMIN, "content-type": "application/json", **sign_request(ADMIN_KEY, "POST", "/admin/keys", raw)})
    if created.status_code == 501:
        pytest.skip(f"this host has no key store: {created.text}")
    assert created.status_code == 201, created.text
    return created.json()["key"]


def test_model_permissions_apply_to_the_resolved_route(server):
    key = _stored_key(server, {"allowed_models": ["smart", "mock-1"]})
    with pytest.raises(openai.PermissionDeniedError) as info:  # smart's default is gpt-priced
        sdk(server, key).chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "model_not_allowed"
    allowed = sdk(server, key, {"plan": "free"}).chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "hi"}])
    assert allowed.choices[0].message.content


def test_a_keys_default_tags_choose_its_branch_not_the_clients_header(server):
    key = _stored_key(server, {"tags": {"plan": "free"}})
    raw = sdk(server, key, {"plan": "paid"}).chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-flaregate-provider"] == "mock"  # the key's plan, whatever the header says


def test_the_resolved_routes_guardrail_policy_applies_through_the_alias(server):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(server).chat.completions.create(model="smart", messages=[{"role": "user", "content": "about Project X"}])
    assert info.value.body["code"] == "guardrail_blocked"


def _metrics(server) -> str:
    return httpx.get(server.base_url + "/metrics", headers=ADMIN, timeout=10).text


def _requests_counted(text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("flaregate_requests_total{"))


def test_unauthenticated_and_unrouted_requests_add_no_label(server):
    before = _requests_counted(_metrics(server))
    made_up = [f"junk-{secrets.token_hex(6)}" for _ in range(10)]
    paths = {"/v1/chat/completions": {"messages": [{"role": "user", "content": "x"}]},
             "/v1/embeddings": {"input": "x"},
             "/v1/messages": {"messages": [{"role": "user", "content": "x"}], "max_tokens": 5},
             "/v1/responses": {"input": "x"}}
    for model in made_up:
        for path, body in paths.items():
            bad_key = httpx.post(server.base_url + path, json={"model": model, **body}, timeout=10,
                                 headers={"authorization": "Bearer fg-wrong-key-0000000000"})
            assert bad_key.status_code == 401
    for model in made_up[:3]:  # authenticated, but no route: a 404, counted without its name
        unrouted = httpx.post(server.base_url + "/v1/chat/completions", timeout=10,
                              json={"model": model, "messages": [{"role": "user", "content": "x"}]},
                              headers={"authorization": f"Bearer {GATEWAY_KEY}"})
        assert unrouted.status_code == 404
    deadline = time.monotonic() + 10  # events reach the hub in batches: wait for the 43 to be counted
    while True:
        text = _metrics(server)
        if _requests_counted(text) >= before + 43 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert _requests_counted(text) >= before + 43, "the refused requests were not counted at all"
    assert not any(model in text for model in made_up)
    analytics = httpx.get(server.base_url + "/v1/analytics", params={"window": "1h"}, headers=ADMIN, timeout=10).text
    assert not any(model in analytics for model in made_up)
