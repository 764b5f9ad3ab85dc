"""LOG_BODIES through a real server (both hosts): bodies kept in the request-log record
with secrets and the guardrails' redactions applied, capped, shown by /v1/logs/{id} only,
and never for a private route or a key marked private."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from .conftest import ADMIN_KEY, GATEWAY_KEY, UPSTREAM_KEY, run_gateway, upstream_env

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
MAX_BYTES = 600
SECRET_LIKE = "sk-live-0123456789abcdefghij"
ROUTES = {"gpt-test": ["upstream"], "gpt-redacted": ["upstream"], "gpt-private": ["upstream"], "mock-1": ["mock"]}


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, LOG_BODIES="both", LOG_BODY_MAX_BYTES=str(MAX_BYTES),
                       LOG_PRIVATE_ROUTES="gpt-private", FLAREGATE_ROUTES=json.dumps(ROUTES), SIGNED_ROUTES="",
                       CACHE_TTL_SECONDS="0", FLAREGATE_GUARDRAILS=json.dumps({
                           "policies": {"mask": {"pii": ["email"]}}, "routes": {"gpt-redacted": "mask"}}))
    with run_gateway(tmp_path_factory.mktemp("bodies"), env) as gateway:
        yield gateway


def _chat(server, model: str, content: str, key: str = GATEWAY_KEY, **extra) -> httpx.Response:
    response = httpx.post(server.base_url + "/v1/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {key}"},
                          json={"model": model, "messages": [{"role": "user", "content": content}], **extra})
    assert response.status_code == 200, response.text
    return response


def _record(server, response: httpx.Response) -> dict:
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + 30
    while True:
        found = httpx.get(f"{server.base_url}/v1/logs/{request_id}", headers=ADMIN, timeout=10)
        if found.status_code == 200 or time.monotonic() > deadline:
            assert found.status_code == 200, found.text
            return found.json()
        time.sleep(0.2)


def test_bodies_are_kept_with_secrets_redacted(server):
    response = _chat(server, "gpt-test", f"keys {SECRET_LIKE} and {UPSTREAM_KEY} please")
    record = _record(server, response)
    assert json.loads(record["request_body"])["messages"][0]["content"] == "keys [redacted] and [redacted] please"
    answer = json.loads(record["response_body"])  # the mock echoes the question, secrets included
    assert answer["choices"][0]["message"]["content"] == "echo: keys [redacted] and [redacted] please"
    assert SECRET_LIKE not in json.dumps(record) and UPSTREAM_KEY not in json.dumps(record)
    page = httpx.get(server.base_url + "/v1/logs", params={"request_id": record["request_id"]}, headers=ADMIN).json()
    assert page["data"] and "request_body" not in page["data"][0]  # bodies: one record at a time


def test_the_guardrails_redactions_apply_to_the_kept_body(server):
    record = _record(server, _chat(server, "gpt-redacted", "mail me at someone@example.com"))
    assert "someone@example.com" not in record["request_body"]
    assert "[REDACTED_EMAIL]" in record["request_body"]


def test_a_stream_is_kept_and_a_long_body_is_capped(server):
    streamed = _record(server, _chat(server, "gpt-test", "stream me", stream=True))
    # The SSE bytes as relayed, up to the cap (a mock stream is longer than MAX_BYTES).
    assert streamed["response_body"].startswith("data: {") and "chat.completion.chunk" in streamed["response_body"]
    assert streamed["response_body_truncated"] is True and len(streamed["response_body"].encode()) <= MAX_BYTES
    long = _record(server, _chat(server, "gpt-test", "x" * 5000))
    assert long["request_body_truncated"] is True and long["response_body_truncated"] is True
    assert len(long["request_body"].encode()) <= MAX_BYTES and len(long["response_body"].encode()) <= MAX_BYTES


def test_nothing_is_kept_for_a_private_route_or_a_private_key(server):
    private_route = _record(server, _chat(server, "gpt-private", "not for the log"))
    assert private_route["status"] == 200
    assert "request_body" not in private_route and "response_body" not in private_route
    created = httpx.post(server.base_url + "/admin/keys", headers=ADMIN, timeout=10,
                         json={"name": "private-key", "private": True})
    assert created.status_code == 201, created.text
    private_key = _record(server, _chat(server, "gpt-test", "mine alone", key=created.json()["key"]))
    assert private_key["key_id"] == created.json()["id"]
    assert "request_body" not in private_key and "response_body" not in private_key
