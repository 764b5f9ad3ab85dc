"""The read-only observer key (FLAREGATE_OBSERVER_KEY) against the real server (and, with
FLAREGATE_TARGET=edge, the Worker under `wrangler dev`): the operator views, the request log
without bodies, nothing under /admin/; production refuses one that is the admin key. Rows of
docs/security.md's "Attacks and their tests" table name these tests."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time

import httpx
import pytest
import websockets

from flaregate.security.signing import sign_request

from .conftest import (
    ADMIN_KEY,
    GATEWAY_KEY,
    TARGET,
    free_port,
    run_edge_gateway,
    run_gateway,
    upstream_env,
)
from .test_production_secrets import STRONG

OBSERVER_KEY = "fgo-test-observer-key-5555555555"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
OBSERVER = {"authorization": f"Bearer {OBSERVER_KEY}"}


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, FLAREGATE_OBSERVER_KEY=OBSERVER_KEY, LOG_BODIES="both",
                       CACHE_TTL_SECONDS="0")
    with run_gateway(tmp_path_factory.mktemp("observer"), env) as gateway:
        yield gateway


def admin(server, method: str, path: str, body=None, *, key: str = ADMIN_KEY) -> httpx.Response:
    """A request signed with the signing secret (the admin key here), carrying ``key``."""
    raw = b"" if body is None else json.dumps(body).encode()
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json",
               **sign_request(ADMIN_KEY, method, path, raw)}
    return httpx.request(method, server.base_url + path, content=raw, headers=headers, timeout=15)


def chat(server, key: str, model: str = "mock-1", **headers: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=20,
                      headers={"authorization": f"Bearer {key}", **headers})


def ws_status(server, **kwargs) -> int:
    """The /ws handshake's status: 101 (and the hub's hello read) or the refusal's."""
    async def connect() -> int:
        try:
            async with websockets.connect(server.ws_url, open_timeout=15, **kwargs) as ws:
                json.loads(await ws.recv())
                return 101
        except websockets.exceptions.InvalidStatus as exc:
            return exc.response.status_code
    return asyncio.run(connect())


def records(server, **params) -> list[dict]:
    answer = httpx.get(server.base_url + "/v1/logs", params={"limit": "200", **params}, headers=ADMIN, timeout=15)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def wait_for_record(server, request_id: str) -> None:
    deadline = time.monotonic() + 30  # events reach the hub in batches
    while not records(server, request_id=request_id):
        assert time.monotonic() < deadline, f"{request_id} never reached the request log"
        time.sleep(0.2)


def test_the_observer_key_reads_the_operator_views_but_no_bodies_and_no_admin(server):
    request_id = f"req_observed_{secrets.token_hex(4)}"
    assert chat(server, GATEWAY_KEY, **{"x-request-id": request_id}).status_code == 200
    wait_for_record(server, request_id)
    for path in ("/metrics", "/v1/analytics", "/v1/logs", f"/v1/logs?token={OBSERVER_KEY}"):
        headers = {} if "token=" in path else OBSERVER
        assert httpx.get(server.base_url + path, headers=headers, timeout=15).status_code == 200, path
    assert ws_status(server, subprotocols=["flaregate.v1", f"bearer.{OBSERVER_KEY}"]) == 101
    as_admin = httpx.get(server.base_url + f"/v1/logs/{request_id}", headers=ADMIN, timeout=15).json()
    assert "hi" in as_admin["request_body"]
    as_observer = httpx.get(server.base_url + f"/v1/logs/{request_id}", headers=OBSERVER, timeout=15).json()
    assert as_observer["request_id"] == request_id and as_observer["bodies_withheld"] is True
    assert "request_body" not in as_observer and "response_body" not in as_observer
    for method, path, body in (("GET", "/admin/keys", None), ("POST", "/admin/keys", {"name": "x"}),
                               ("GET", "/admin/cache/stats", None)):
        answer = admin(server, method, path, body, key=OBSERVER_KEY)  # signed, yet not the admin key
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "admin_key_required", answer.text


def test_production_refuses_an_observer_key_that_is_the_admin_key(tmp_path):
    vars = {**STRONG, "FLAREGATE_OBSERVER_KEY": STRONG["FLAREGATE_ADMIN_KEY"]}
    message = "FLAREGATE_OBSERVER_KEY must differ from FLAREGATE_ADMIN_KEY"
    if TARGET == "edge":
        with run_edge_gateway(tmp_path, vars) as server:
            response = httpx.get(server.base_url + "/metrics", headers=ADMIN, timeout=30)
            assert response.status_code == 503 and response.json()["error"]["code"] == "misconfigured"
            deadline = time.monotonic() + 10  # workerd's log reaches wrangler's output a moment later
            while message not in server.log() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert message in server.log()
            assert STRONG["FLAREGATE_ADMIN_KEY"] not in server.log() + response.text
        return
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLAREGATE_", "RATE_LIMIT", "CACHE_"))}
    result = subprocess.run([sys.executable, "-m", "flaregate", "serve", "--port", str(free_port()),
                             "--data-dir", str(tmp_path)], env={**clean, **vars}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert STRONG["FLAREGATE_ADMIN_KEY"] not in result.stderr
