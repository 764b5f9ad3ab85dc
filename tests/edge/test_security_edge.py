"""Security on the edge adapter: the admin API and stored keys go through the SecurityStore
Durable Object over (faked) RPC; revocation, replay refusal and /ws authorisation."""

from __future__ import annotations

import json
from typing import Any

import entry
from flaregate.hosts.edge import worker as edge_worker
from flaregate.security.signing import sign_request

from .conftest import API_KEY, FakeCtx, FakeRequest, FakeResponse

BASE = "https://flaregate.example.workers.dev"
ADMIN = "edge-admin-secret-0123456789"


async def call(env: Any, request: FakeRequest) -> FakeResponse:
    return await entry.Default(FakeCtx(), env).fetch(request)


def admin_request(method: str, path: str, body: Any = None) -> FakeRequest:
    raw = b"" if body is None else json.dumps(body).encode()
    headers = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json",
               **sign_request(ADMIN, method, path, raw)}
    return FakeRequest(method, BASE + path, headers, raw)


def chat(key: str) -> FakeRequest:
    body = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}).encode()
    return FakeRequest("POST", f"{BASE}/v1/chat/completions",
                       {"authorization": f"Bearer {key}", "content-type": "application/json"}, body)


async def test_keys_live_in_the_security_store_object_and_revocation_is_seen(make_env, monkeypatch):
    env = make_env(FLAREGATE_ADMIN_KEY=ADMIN, KEY_CACHE_SECONDS="0")
    created = await call(env, admin_request("POST", "/admin/keys", {"name": "edge", "allowed_models": ["mock-1"]}))
    assert created.status == 201, created.json()
    key = created.json()["key"]
    assert env.SECURITY_STORE.names and set(env.SECURITY_STORE.names) == {"global"}
    rows = env.SECURITY_STORE.ctxs["global"].storage.sql.db.execute("SELECT * FROM gateway_keys").fetchall()
    assert len(rows) == 1 and key not in repr([tuple(row) for row in rows])
    assert (await call(env, chat(key))).status == 200
    monkeypatch.setattr(edge_worker, "_cached", None)  # another isolate
    assert (await call(env, chat(key))).status == 200
    revoked = await call(env, admin_request("DELETE", f"/admin/keys/{created.json()['id']}"))
    assert revoked.status == 200
    assert (await call(env, chat(key))).status == 401
    ws = await call(env, FakeRequest("GET", f"{BASE}/ws?token={key}", {"upgrade": "websocket"}))
    assert ws.status == 401 and env.METRICS_HUB.names == []
    # Configured keys are unaffected, and still open /ws.
    assert (await call(env, chat(API_KEY))).status == 200


async def test_a_replayed_admin_request_is_refused_across_isolates(make_env, monkeypatch):
    env = make_env(FLAREGATE_ADMIN_KEY=ADMIN)
    request = admin_request("GET", "/admin/keys")
    assert (await call(env, request)).status == 200
    monkeypatch.setattr(edge_worker, "_cached", None)  # the replay lands on another isolate
    again = await call(env, request)
    assert again.status == 401 and again.json()["error"]["code"] == "signature_replayed"


async def test_without_the_binding_only_configured_keys_work(make_env):
    env = make_env(FLAREGATE_ADMIN_KEY=ADMIN)
    del env.SECURITY_STORE
    assert (await call(env, chat(API_KEY))).status == 200
    answer = await call(env, admin_request("GET", "/admin/keys"))
    assert answer.status == 501 and answer.json()["error"]["code"] == "admin_unavailable"
