"""Keys and nonces over SECURITY_SHARDS objects through a real server: on the Worker the
keys the admin API makes are spread over three SecurityStore objects, a revocation through
the admin API is refused at once, and after a restart with SECURITY_SHARDS=5 (the previous
count, 3, read as a fallback) every key still works, every revoked one is still refused,
and a signed admin request used before the change cannot be replayed after it. The local
host keeps one store: the same requests, the same answers."""

from __future__ import annotations

import json

import httpx

from flaregate.security.signing import sign_request

from .conftest import run_gateway, upstream_env

ADMIN_KEY = "fg-admin-shards-secret-9876543210abc"
KEYS = 12


def admin(server, method: str, path: str, body=None, headers=None) -> httpx.Response:
    raw = b"" if body is None else json.dumps(body).encode()
    headers = headers or {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json",
                          **sign_request(ADMIN_KEY, method, path, raw)}
    return httpx.request(method, server.base_url + path, content=raw, headers=headers, timeout=30)


def chat(server, key: str) -> int:
    body = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(server.base_url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"}, timeout=30).status_code


def test_keys_and_nonces_survive_a_change_of_shard_count_and_revocation_is_immediate(upstream, tmp_path):
    base = upstream_env(upstream.base_url, FLAREGATE_ADMIN_KEY=ADMIN_KEY, KEY_CACHE_SECONDS="30")
    data = tmp_path / "security-shards"
    with run_gateway(data, {**base, "SECURITY_SHARDS": "3"}) as server:
        keys = []
        for i in range(KEYS):
            created = admin(server, "POST", "/admin/keys", {"name": f"k{i}"})
            assert created.status_code == 201, created.text
            keys.append(created.json())
        assert all(chat(server, k["key"]) == 200 for k in keys)  # each found (and now cached)
        doomed = keys[:3]
        for key in doomed:
            assert admin(server, "DELETE", f"/admin/keys/{key['id']}").status_code == 200
            assert chat(server, key["key"]) == 401  # at once, though it was cached a moment ago
        listed = admin(server, "GET", "/admin/keys").json()["data"]
        assert {k["id"] for k in keys} <= {k["id"] for k in listed}
        path = "/admin/keys"
        used = {"authorization": f"Bearer {ADMIN_KEY}", **sign_request(ADMIN_KEY, "GET", path)}
        assert admin(server, "GET", path, headers=used).status_code == 200
    with run_gateway(data, {**base, "SECURITY_SHARDS": "5", "SECURITY_SHARDS_PREVIOUS": "3"}) as server:
        assert all(chat(server, k["key"]) == 200 for k in keys[3:])
        assert all(chat(server, k["key"]) == 401 for k in doomed)
        replay = admin(server, "GET", path, headers=used)
        assert replay.status_code == 401 and replay.json()["error"]["code"] == "signature_replayed"
        late = admin(server, "POST", "/admin/keys", {"name": "after"}).json()
        assert chat(server, late["key"]) == 200
        assert admin(server, "DELETE", f"/admin/keys/{late['id']}").status_code == 200
        assert chat(server, late["key"]) == 401
        assert len(admin(server, "GET", "/admin/keys").json()["data"]) == KEYS + 1
