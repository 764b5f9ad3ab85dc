"""A conditional route through the real gateway (both hosts): tags, a named header and body
parameters choose the target; chat, Responses and Messages all take the same table."""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import GATEWAY_KEY, run_gateway, upstream_env

CONDITIONAL = {"smart": {"headers": ["x-team"], "default": "mock-1", "branches": [
    {"when": {"field": "metadata.plan", "op": "eq", "value": "paid"}, "route": "gpt-test"},
    {"when": {"and": [{"field": "header.x-team", "op": "eq", "value": "search"},
                      {"field": "body.max_tokens", "op": "lte", "value": 100}]}, "route": "gpt-test"}]}}


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, CACHE_TTL_SECONDS="0", FLAREGATE_CONDITIONAL_ROUTES=json.dumps(CONDITIONAL))
    with run_gateway(tmp_path_factory.mktemp("conditional"), env) as gw:
        yield gw


@pytest.mark.parametrize(("path", "headers", "extra", "provider"), [
    ("/v1/chat/completions", {"x-flaregate-metadata": '{"plan": "paid"}'}, {}, "upstream"),
    ("/v1/chat/completions", {"x-flaregate-metadata": '{"plan": "free"}'}, {}, "mock"),
    ("/v1/chat/completions", {"x-team": "search"}, {"max_tokens": 50}, "upstream"),
    ("/v1/chat/completions", {"x-team": "search"}, {"max_tokens": 500}, "mock"),
    ("/v1/responses", {"x-flaregate-metadata": '{"plan": "paid"}'}, {}, "upstream"),
    ("/v1/responses", {}, {}, "mock"),
    ("/v1/messages", {"x-team": "search"}, {"max_tokens": 50}, "upstream"),
])
def test_conditions_choose_the_target(server, path, headers, extra, provider):
    body = {"model": "smart", "messages": [{"role": "user", "content": "hi"}], "input": "hi", **extra}
    if path == "/v1/messages":
        body.setdefault("max_tokens", 50)
    r = httpx.post(server.base_url + path, json=body, timeout=20,
                   headers={"authorization": f"Bearer {GATEWAY_KEY}", **headers})
    assert r.status_code == 200, r.text
    assert r.headers["x-flaregate-provider"] == provider
