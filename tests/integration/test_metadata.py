"""Request tags (``x-flaregate-metadata`` and a stored key's defaults) into analytics, both hosts."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from flaregate.security.signing import sign_request

from .conftest import ADMIN_KEY, GATEWAY_KEY, run_gateway, upstream_env

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
HEADER = "x-flaregate-metadata"


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    routes = json.loads(upstream_env(upstream.base_url)["FLAREGATE_ROUTES"])
    routes["gpt-cached"] = {"targets": ["upstream"], "cache_ttl_seconds": 300}  # tags not in its key
    routes["gpt-tagged"] = {"targets": ["upstream"], "cache_ttl_seconds": 300, "cache_key_tags": ["feature"]}
    env = upstream_env(upstream.base_url, CACHE_TTL_SECONDS="0", METRICS_TAG_LABELS="feature",
                       FLAREGATE_ROUTES=json.dumps(routes))
    with run_gateway(tmp_path_factory.mktemp("metadata"), env) as gw:
        yield gw


def _client(server, key: str = GATEWAY_KEY, tags: dict | None = None) -> openai.OpenAI:
    headers = {HEADER: json.dumps(tags)} if tags is not None else {}
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=20,
                         default_headers=headers)


def _groups(server, tag: str, want: int) -> dict:
    deadline = time.monotonic() + 10  # events reach the hub in batches
    while True:
        data = httpx.get(server.base_url + "/v1/analytics", params={"group_by": f"tag:{tag}", "window": "1h"},
                         headers=ADMIN, timeout=10).json()
        groups = data["windows"]["1h"]["groups"]
        if sum(g["requests"] for g in groups.values()) >= want or time.monotonic() > deadline:
            return groups
        time.sleep(0.1)


def test_tags_round_trip_into_analytics_group_by_tag(server):
    search = _client(server, tags={"feature": "search", "team": "core"})
    chat = _client(server, tags={"feature": "chat"})
    for i in range(3):
        search.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": f"q{i}"}])
    chat.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hello"}])
    chat.responses.create(model="mock-1", input="a responses call")  # /v1/responses is tagged too
    groups = _groups(server, "feature", 5)
    assert groups["search"]["requests"] == 3 and groups["chat"]["requests"] == 2
    assert groups["chat"]["tokens_in"] > 0
    assert _groups(server, "team", 3)["core"]["requests"] == 3
    metrics = httpx.get(server.base_url + "/metrics", headers=ADMIN, timeout=10).text
    assert 'flaregate_tag_requests_total{tag="feature",value="search"} 3' in metrics
    assert 'tag="team"' not in metrics  # not allow-listed: no label, whatever its values
    untagged = httpx.get(server.base_url + "/v1/analytics", params={"window": "1h"}, headers=ADMIN).json()
    assert set(untagged["windows"]["1h"]["by_tag"]) == {"feature", "team"}


def test_a_stored_keys_default_tags_apply_and_the_request_cannot_override_them(server):
    raw = json.dumps({"name": "tagged", "tags": {"dept": "finance", "feature": "default-feature"}}).encode()
    created = httpx.post(server.base_url + "/admin/keys", content=raw, timeout=10, headers={
        **ADMIN, "content-type": "application/json", **sign_request(ADMIN_KEY, "POST", "/admin/keys", raw)})
    if created.status_code == 501:
        pytest.skip(f"this host has no key store: {created.text}")
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    _client(server, key).chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "x"}])
    _client(server, key, {"feature": "override"}).chat.completions.create(
        model="mock-1", messages=[{"role": "user", "content": "y"}])
    assert _groups(server, "dept", 2)["finance"]["requests"] == 2
    features = _groups(server, "feature", 2)
    # The key's tag wins over the header's (hardening: client tags never grant).
    assert features["default-feature"]["requests"] == 2 and "override" not in features


def test_bad_default_tags_on_a_new_key_are_a_400(server):
    raw = json.dumps({"name": "bad", "tags": {"a": 1}}).encode()
    r = httpx.post(server.base_url + "/admin/keys", content=raw, timeout=10, headers={
        **ADMIN, "content-type": "application/json", **sign_request(ADMIN_KEY, "POST", "/admin/keys", raw)})
    assert r.status_code in (400, 501), r.text


HOSTILE = ["not json", "[1,2]", '"str"', "{", json.dumps({f"k{i}": "v" for i in range(9)}),
           json.dumps({"k": 1}), json.dumps({"k": "x" * 129}), json.dumps({"bad key!": "v"}),
           json.dumps({"k": {"nested": "v"}}), json.dumps({"k": "line\nbreak"}), json.dumps({"": "v"}),
           "{" * 5000]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/messages"])
def test_invalid_metadata_is_a_400_never_a_5xx(server, value, path):
    body = {"model": "mock-1", "messages": [{"role": "user", "content": "x"}], "input": "x", "max_tokens": 5}
    r = httpx.post(server.base_url + path, json=body, timeout=10,
                   headers={"authorization": f"Bearer {GATEWAY_KEY}", HEADER: value})
    assert r.status_code == 400, r.text
    message = json.dumps(r.json())
    assert HEADER in message


def test_analytics_group_by_must_name_a_dimension(server):
    r = httpx.get(server.base_url + "/v1/analytics", params={"group_by": "colour"}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "group_by"


def _cache_status(server, model: str, tags: dict, text: str) -> str:
    raw = _client(server, tags=tags).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}])
    return raw.headers["cache-status"]


def test_tags_enter_the_cache_key_only_where_the_route_says_so(server):
    text = f"tagged cache {time.time_ns()}"
    # gpt-cached: tags are analytics only, so another feature's request is a hit.
    assert "miss" in _cache_status(server, "gpt-cached", {"feature": "a"}, text)
    assert "hit" in _cache_status(server, "gpt-cached", {"feature": "b"}, text)
    # gpt-tagged keys on "feature" (only): a new feature value misses, the same one hits
    # whatever the other tags say, and no feature at all is its own entry.
    assert "miss" in _cache_status(server, "gpt-tagged", {"feature": "a"}, text)
    assert "hit" in _cache_status(server, "gpt-tagged", {"feature": "a", "team": "x"}, text)
    assert "miss" in _cache_status(server, "gpt-tagged", {"feature": "b"}, text)
    assert "miss" in _cache_status(server, "gpt-tagged", {}, text)
    assert "hit" in _cache_status(server, "gpt-tagged", {"team": "y"}, text)
