"""Security on the real server: keys hashed at rest and surviving restarts, revocation at
once, per-key models, and secrets sent in every place a client can put them found in no
log, metric, hub message, stored row or error body."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path

import httpx
import openai
import pytest
import websockets
import websockets.exceptions

from flaregate.security.signing import sign_request

from .conftest import GATEWAY_KEY, TARGET, UPSTREAM_KEY, run_gateway, upstream_env

# These read the local server's data dir (SQLite file, printed key, its log file).
local_only = pytest.mark.skipif(TARGET == "edge", reason="inspects the standalone server's data dir and log")

ADMIN_KEY = "fg-admin-integration-secret-9876543210"


def admin(server, method: str, path: str, body=None, *, key: str = ADMIN_KEY) -> httpx.Response:
    raw = b"" if body is None else json.dumps(body).encode()
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json",
               **sign_request(ADMIN_KEY, method, path, raw)}
    return httpx.request(method, server.base_url + path, content=raw, headers=headers, timeout=10)


def chat(server, key: str, model: str = "mock-1", **kwargs) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(server.base_url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}", **kwargs.pop("headers", {})}, timeout=10, **kwargs)


def stored_bytes(data_dir: Path) -> bytes:
    """The raw bytes of every file the server keeps, except its own stdout log."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.iterdir()) if p.is_file() and p.name != "server.log")


def stored_rows(data_dir: Path) -> str:
    db = sqlite3.connect(data_dir / "flaregate.sqlite3")
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(repr(row) for t in tables for row in db.execute(f'SELECT * FROM "{t}"'))
    finally:
        db.close()


@local_only
def test_local_key_store_hashed_at_rest_survives_restart_and_revokes_at_once(upstream, tmp_path):
    env = upstream_env(upstream.base_url, FLAREGATE_ADMIN_KEY=ADMIN_KEY)
    del env["FLAREGATE_API_KEYS"]  # the local server makes and keeps its own key
    data = tmp_path / "keys"
    with run_gateway(data, env) as server:
        default_key = re.search(r"Created a gateway key \(shown only now[^)]*\): (\S+)", server.log()).group(1)
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=default_key, max_retries=0)
        assert client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "x"}]).choices
        created = admin(server, "POST", "/admin/keys", {"name": "ci", "allowed_models": ["mock-1"]})
        assert created.status_code == 201, created.text
        ci = created.json()
        assert chat(server, ci["key"]).status_code == 200
        denied = chat(server, ci["key"], model="gpt-test")
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"
        doomed = admin(server, "POST", "/admin/keys", {"name": "doomed"}).json()
        assert chat(server, doomed["key"]).status_code == 200
        assert admin(server, "DELETE", f"/admin/keys/{doomed['id']}").status_code == 200
        revoked = chat(server, doomed["key"])
        assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]
        assert not (data / "gateway-keys.txt").exists()
        at_rest = stored_bytes(data) + stored_rows(data).encode()
        for plain in (default_key, ci["key"], doomed["key"], ADMIN_KEY):
            assert plain.encode() not in at_rest
        assert ci["id"].encode() in at_rest  # the store itself is there
    with run_gateway(data, env) as server:
        assert "Created a gateway key" not in server.log()  # no new key after a restart
        assert chat(server, default_key).status_code == 200
        assert chat(server, ci["key"]).status_code == 200
        assert chat(server, ci["key"], model="gpt-test").status_code == 403
        assert chat(server, doomed["key"]).status_code == 401
        listed = admin(server, "GET", "/admin/keys").json()["data"]
        assert {k["id"] for k in listed} >= {ci["id"], doomed["id"]}


@local_only
def test_legacy_plain_key_file_is_imported_hashed_and_removed(upstream, tmp_path):
    env = upstream_env(upstream.base_url)
    del env["FLAREGATE_API_KEYS"]
    data = tmp_path / "legacy"
    data.mkdir()
    legacy = "fg-legacy-plain-key-abcdefghijklmnopqrstuvwxyz"
    (data / "gateway-keys.txt").write_text(legacy + "\n")
    with run_gateway(data, env) as server:
        assert "Created a gateway key" not in server.log()
        assert chat(server, legacy).status_code == 200
        assert not (data / "gateway-keys.txt").exists()
        assert legacy.encode() not in stored_bytes(data)


def test_admin_api_is_signed_and_refuses_unsigned_or_replayed_requests(upstream, tmp_path):
    env = upstream_env(upstream.base_url, FLAREGATE_ADMIN_KEY=ADMIN_KEY)
    with run_gateway(tmp_path / "sig", env) as server:
        unsigned = httpx.get(server.base_url + "/admin/keys", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert unsigned.status_code == 401 and unsigned.json()["error"]["code"] == "signature_required"
        headers = {"authorization": f"Bearer {ADMIN_KEY}", **sign_request(ADMIN_KEY, "GET", "/admin/keys")}
        assert httpx.get(server.base_url + "/admin/keys", headers=headers).status_code == 200
        replay = httpx.get(server.base_url + "/admin/keys", headers=headers)
        assert replay.status_code == 401 and replay.json()["error"]["code"] == "signature_replayed"
        old = {"authorization": f"Bearer {ADMIN_KEY}",
               **sign_request(ADMIN_KEY, "GET", "/admin/keys", timestamp=1_000_000_000)}
        assert httpx.get(server.base_url + "/admin/keys", headers=old).json()["error"]["code"] == "signature_expired"


def test_cors_on_the_real_server(upstream, tmp_path):
    off = httpx.Client(timeout=10)
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    with run_gateway(tmp_path / "cors-off", upstream_env(upstream.base_url)) as server:
        response = off.options(server.base_url + "/v1/chat/completions", headers=preflight)
        assert response.status_code == 405 and "access-control-allow-origin" not in response.headers
    with run_gateway(tmp_path / "cors-on", upstream_env(upstream.base_url, CORS_ALLOW_ORIGINS="https://app.example")) as server:
        response = off.options(server.base_url + "/v1/chat/completions", headers=preflight)
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        answer = chat(server, GATEWAY_KEY, headers={"origin": "https://app.example"})
        assert answer.headers["access-control-allow-origin"] == "https://app.example"


# -- secrets go nowhere ----------------------------------------------------------------------
# Distinct secrets, so a hit says which place leaked. Each is shaped like a real key.
WRONG_BEARER = "fg-wrong-bearer-aaaaaaaaaaaaaaaaaaaaaaaa"
QUERY_TOKEN = "fg-query-token-bbbbbbbbbbbbbbbbbbbbbbbbbb"
X_API_KEY = "sk-x-api-key-cccccccccccccccccccccccccc"
COOKIE = "sk-cookie-dddddddddddddddddddddddddddddd"
BODY_KEY = "sk-body-field-eeeeeeeeeeeeeeeeeeeeeeeeee"
PROXY_AUTH = "sk-proxy-auth-ffffffffffffffffffffffffff"
WRONG_ADMIN = "fg-wrong-admin-gggggggggggggggggggggggggg"
IN_PATH = "sk-in-path-hhhhhhhhhhhhhhhhhhhhhhhhhhhhhh"
BAD_JSON = "sk-in-bad-json-iiiiiiiiiiiiiiiiiiiiiiiiiii"
IN_REQUEST_ID = "sk-in-request-id-jjjjjjjjjjjjjjjjjjjjjjjj"
SECRETS = [GATEWAY_KEY, UPSTREAM_KEY, ADMIN_KEY, WRONG_BEARER, QUERY_TOKEN, X_API_KEY, COOKIE, BODY_KEY,
           PROXY_AUTH, WRONG_ADMIN, IN_PATH, BAD_JSON, IN_REQUEST_ID]


async def _ws_messages(server) -> list[str]:
    texts = []
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(server.ws_url + f"?token={QUERY_TOKEN}"):
            pass
    with pytest.raises(websockets.exceptions.InvalidStatus):  # a gateway key does not open the hub
        async with websockets.connect(server.ws_url, additional_headers={"authorization": f"Bearer {GATEWAY_KEY}"}):
            pass
    async with websockets.connect(server.ws_url, additional_headers={"authorization": f"Bearer {ADMIN_KEY}"}) as ws:
        texts.append(await asyncio.wait_for(ws.recv(), 5))
        await ws.send(json.dumps({"type": "snapshot", "key": GATEWAY_KEY}))
        texts.append(await asyncio.wait_for(ws.recv(), 5))
        await ws.send(json.dumps({"type": "ping"}))
        texts.append(await asyncio.wait_for(ws.recv(), 5))
    return texts


@local_only
def test_secrets_in_every_client_place_end_up_nowhere(upstream, tmp_path):
    env = upstream_env(upstream.base_url, FLAREGATE_ADMIN_KEY=ADMIN_KEY, LOG_LEVEL="debug")
    data = tmp_path / "leak"
    bodies: list[str] = []
    with run_gateway(data, env) as server:
        base = server.base_url
        http = httpx.Client(timeout=10)
        good = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}], "api_key": BODY_KEY}
        sneaky = {"x-api-key": X_API_KEY, "api-key": X_API_KEY, "cookie": f"session={COOKIE}",
                  "proxy-authorization": f"Bearer {PROXY_AUTH}", "x-admin-key": WRONG_ADMIN}
        requests = [
            # a valid client with extra secrets around it: non-streaming (twice: cache), streaming
            ("POST", "/v1/chat/completions", {"authorization": f"Bearer {GATEWAY_KEY}", **sneaky}, good),
            ("POST", "/v1/chat/completions", {"authorization": f"Bearer {GATEWAY_KEY}", **sneaky}, good),
            ("POST", "/v1/chat/completions", {"authorization": f"Bearer {GATEWAY_KEY}"}, {**good, "stream": True}),
            ("POST", "/v1/chat/completions", {"authorization": f"Bearer {GATEWAY_KEY}"}, {**good, "model": "gpt-failover"}),
            # wrong keys everywhere
            ("POST", "/v1/chat/completions", {"authorization": f"Bearer {WRONG_BEARER}", **sneaky}, good),
            ("POST", f"/v1/chat/completions?token={QUERY_TOKEN}&api_key={QUERY_TOKEN}", sneaky, good),
            ("GET", f"/v1/models?token={QUERY_TOKEN}", {}, None),
            ("GET", "/v1/models", {"authorization": WRONG_BEARER}, None),
            ("GET", "/v1/models", {"authorization": f"Basic {WRONG_BEARER}"}, None),
            ("POST", "/v1/chat/completions", {"authorization": f"Bearer {GATEWAY_KEY}"}, f'{{"model": "{BAD_JSON}"'),
            ("POST", "/v1/chat/completions", {"authorization": f"Bearer {GATEWAY_KEY}"},
             {"model": "gpt-test", "messages": BAD_JSON}),
            ("POST", "/v1/chat/completions", {"authorization": f"Bearer {GATEWAY_KEY}", "x-request-id": IN_REQUEST_ID}, good),
            ("GET", f"/v1/{IN_PATH}", {"authorization": f"Bearer {GATEWAY_KEY}"}, None),
            ("GET", "/admin/keys", {"authorization": f"Bearer {WRONG_ADMIN}"}, None),
            ("GET", "/admin/keys", {"x-admin-key": WRONG_ADMIN, "x-flaregate-signature": f"v1={WRONG_ADMIN}"}, None),
            ("POST", "/admin/keys", {"authorization": f"Bearer {WRONG_ADMIN}"}, {"name": WRONG_ADMIN}),
        ]
        for method, path, headers, body in requests:
            content = body.encode() if isinstance(body, str) else (None if body is None else json.dumps(body).encode())
            response = http.request(method, base + path, content=content,
                                    headers={"content-type": "application/json", **headers})
            assert response.status_code < 500, (path, response.text)
            bodies.append(response.text + json.dumps(dict(response.headers)))
        # The upstream answers with an error that echoes its own key.
        upstream.add_faults({"kind": "status", "status": 401, "path": "/v1/chat/completions",
                             "message": f"Incorrect API key provided: {UPSTREAM_KEY}"})
        echoed = http.post(base + "/v1/chat/completions", json={**good, "messages": [{"role": "user", "content": "x"}]},
                           headers={"authorization": f"Bearer {GATEWAY_KEY}"})
        assert echoed.status_code == 401 and "[redacted]" in echoed.json()["error"]["message"]
        bodies.append(echoed.text)
        # The admin API itself, used properly.
        created = admin(server, "POST", "/admin/keys", {"name": "leak-test"})
        assert created.status_code == 201
        admin(server, "GET", "/admin/keys")
        hub = asyncio.run(_ws_messages(server))
        assert any('"requests"' in text for text in hub)
    log = server.log()
    rows = stored_rows(data)
    raw = stored_bytes(data)
    assert "GET /admin/keys" in log or "admin GET /admin/keys" in log  # the debug log did run
    for secret in SECRETS:
        assert secret not in log, f"{secret} in the server log"
        assert secret not in rows and secret.encode() not in raw, f"{secret} stored"
        assert all(secret not in text for text in hub), f"{secret} in a hub message"
        if secret != GATEWAY_KEY:  # responses may carry nothing of any secret...
            assert all(secret not in text for text in bodies), f"{secret} echoed to a client"
    assert created.json()["key"] not in log and created.json()["key"].encode() not in raw


@pytest.mark.skipif(TARGET == "edge", reason="in front of a Worker, Cloudflare enforces its own header limits")
def test_oversized_and_too_many_headers_get_431_json(gateway):
    auth = {"authorization": f"Bearer {GATEWAY_KEY}"}
    for headers in ({**auth, "x-big": "v" * 20_000}, {**auth, **{f"x-h{i}": "v" for i in range(150)}}):
        response = httpx.get(gateway.base_url + "/v1/models", headers=headers)
        assert response.status_code == 431
        assert response.json()["error"]["code"] == "request_header_fields_too_large"
    assert httpx.get(gateway.base_url + "/v1/models", headers=auth).status_code == 200
