"""Gateway keys come only from headers on API routes: a good key in ``?token=`` (or
``?api_key=``) opens nothing, while the operator views keep taking the admin key there
(a browser cannot set headers on a WebSocket or an <a href>)."""

from __future__ import annotations

import json

import pytest

from flaregate.http import Headers, Request
from tests.support.security import ADMIN_KEY, CONFIG_KEY, SecureRig

CHAT = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}).encode()
MESSAGES = json.dumps({"model": "mock-1", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}).encode()


def with_query(method: str, path: str, query: dict[str, str], headers=None, body: bytes = b"") -> Request:
    raw = "&".join(f"{k}={v}" for k, v in query.items())
    return Request(method, path, Headers({"content-type": "application/json", **(headers or {})}), body, query,
                   raw_query=raw)


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/v1/models", b""), ("GET", "/v1/providers", b""), ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/messages", MESSAGES),
])
@pytest.mark.parametrize("param", ["token", "api_key", "key"])
async def test_a_good_gateway_key_in_the_query_is_refused_on_api_routes(method, path, body, param):
    rig = SecureRig()
    stored = (await rig.create_key(name="q"))["key"]
    for key in (CONFIG_KEY, stored):
        status, answer, _ = await rig.call(with_query(method, path, {param: key}, body=body))
        assert status == 401, (path, param, answer)
        assert key not in json.dumps(answer)


async def test_the_same_keys_work_from_headers():
    rig = SecureRig()
    stored = (await rig.create_key(name="h"))["key"]
    for key in (CONFIG_KEY, stored):
        assert (await rig.call(with_query("GET", "/v1/models", {}, {"authorization": f"Bearer {key}"})))[0] == 200
        answer = await rig.call(with_query("POST", "/v1/messages", {}, {"x-api-key": key}, MESSAGES))
        assert answer[0] == 200, answer[1]


@pytest.mark.parametrize("path", ["/metrics", "/v1/analytics"])
async def test_the_operator_views_still_take_the_admin_key_as_a_token(path):
    rig = SecureRig()
    assert (await rig.gateway.handle(with_query("GET", path, {"token": ADMIN_KEY}))).status == 200
    assert (await rig.gateway.handle(with_query("GET", path, {"token": CONFIG_KEY}))).status == 401
