"""The hardening issue's attacks against the real server (and, with FLAREGATE_TARGET=edge,
the Worker under `wrangler dev`): each must fail. Rows of docs/security.md's "Attacks and
their tests" table name these tests."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flaregate.gateway import Gateway
from flaregate.security.signing import sign_request
from tests.support import processes

from .conftest import (
    ADMIN_KEY,
    GATEWAY_KEY,
    TARGET,
    UPSTREAM_KEY,
    free_port,
    run_gateway,
    upstream_env,
)

local_only = pytest.mark.skipif(TARGET == "edge", reason="the standalone server's data dir")
HANDLER_CHANGED = "provider_view" in inspect.getsource(Gateway)  # gateway._providers' 3-line change
TENANT_TEXT = "tenant-a-private-prompt-text"


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    """One gateway for most attacks: one attempt per call (a fault is consumed by the call
    it was injected for); locally its data dir is one the server creates itself."""
    data = tmp_path_factory.mktemp("hardening")
    env = upstream_env(upstream.base_url, UPSTREAM_MAX_ATTEMPTS="1", CACHE_TTL_SECONDS="0")
    with run_gateway(data, env, ("--data-dir", str(data / "fresh"))) as gateway:
        gateway.data_dir = data / "fresh"
        yield gateway


def admin(server, method: str, target: str, body=None, *, sent: str | None = None) -> httpx.Response:
    """A signed admin request for ``target`` (path and query), sent to ``sent`` (default:
    the same target)."""
    raw = b"" if body is None else json.dumps(body).encode()
    headers = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json",
               **sign_request(ADMIN_KEY, method, target, raw)}
    return httpx.request(method, server.base_url + (sent or target), content=raw, headers=headers, timeout=10)


def chat(server, key: str | None, model: str = "gpt-test", *, query: str = "", stream: bool = False,
         content: str = "hi") -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}
    return httpx.post(server.base_url + "/v1/chat/completions" + query, json=body, headers=headers, timeout=15)


# -- 1. webhook targets -------------------------------------------------------------------
NUMERIC_TARGETS = ["https://127.1/", "https://169.254.43518/latest/meta-data/", "https://2130706433/",
                   "https://0x7f.1/", "https://0177.0.0.1/", "https://[::ffff:127.0.0.1]/", "https://[::1]/",
                   "https://0.0.0.0/", "https://%31%32%37.0.0.1/", "https://[64:ff9b::a9fe:a9fe]/"]


def test_webhook_targets_in_numeric_and_mapped_forms_of_private_addresses_are_refused(server):
    for url in NUMERIC_TARGETS:
        answer = admin(server, "POST", "/admin/webhooks", {"url": url})
        assert answer.status_code == 400, (url, answer.text)
        assert answer.json()["error"]["code"] == "webhook_target_refused", url
    assert admin(server, "GET", "/admin/webhooks").json()["data"] == []


# -- 3. the data dir ------------------------------------------------------------------------
@local_only
def test_the_data_dir_is_0700_and_its_sqlite_files_0600(server):
    assert httpx.get(server.base_url + "/v1/models", headers={"authorization": f"Bearer {GATEWAY_KEY}"}).is_success
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(server.data_dir) == 0o700
    files = [p for p in server.data_dir.iterdir() if p.name.startswith("flaregate.sqlite3")]
    assert {p.name for p in files} >= {"flaregate.sqlite3", "flaregate.sqlite3-wal", "flaregate.sqlite3-shm"}
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


# -- 4. the signed query ----------------------------------------------------------------------
def test_a_signed_request_whose_query_is_altered_is_refused(server):
    assert admin(server, "GET", "/admin/keys?limit=10").status_code == 200
    for sent in ("/admin/keys?limit=11", "/admin/keys?limit=10&extra=1", "/admin/keys", "/admin/keys?limit=10&limit=9"):
        answer = admin(server, "GET", "/admin/keys?limit=10", sent=sent)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_signature", sent
    added = admin(server, "GET", "/admin/keys", sent="/admin/keys?limit=1")
    assert added.status_code == 401 and added.json()["error"]["code"] == "invalid_signature"
    # Re-encoded or reordered across names by a proxy: still the same request.
    assert admin(server, "GET", "/admin/keys?a=1&b=x y", sent="/admin/keys?b=x%20y&a=1").status_code == 200


# -- 5. keys in the query -----------------------------------------------------------------------
def test_a_gateway_key_in_the_query_string_opens_no_api_route(server):
    stored = admin(server, "POST", "/admin/keys", {"name": "query-token"}).json()["key"]
    for key in (GATEWAY_KEY, stored):
        assert httpx.get(server.base_url + "/v1/models", headers={"authorization": f"Bearer {key}"}).status_code == 200
        for param in ("token", "api_key"):
            assert httpx.get(server.base_url + f"/v1/models?{param}={key}").status_code == 401
            assert chat(server, None, "mock-1", query=f"?{param}={key}").status_code == 401
            assert httpx.get(server.base_url + f"/v1/providers?{param}={key}").status_code == 401
    # The dashboard's flow is unchanged: the admin key as ?token= on the operator views.
    assert httpx.get(server.base_url + f"/metrics?token={ADMIN_KEY}").status_code == 200
    assert httpx.get(server.base_url + f"/metrics?token={GATEWAY_KEY}").status_code == 401


# -- 7 and 8. upstream error texts ---------------------------------------------------------------
def test_v1_providers_shows_no_upstream_error_text_to_a_gateway_key(server, upstream):
    restricted = admin(server, "POST", "/admin/keys", {"name": "other tenant", "allowed_models": ["mock-1"]}).json()
    upstream.add_faults({"kind": "status", "status": 500, "path": "/v1/chat/completions",
                         "message": f"overloaded while reading {TENANT_TEXT}"})
    assert chat(server, GATEWAY_KEY, content=TENANT_TEXT).status_code == 502
    for key in (GATEWAY_KEY, restricted["key"]):
        report = httpx.get(server.base_url + "/v1/providers", headers={"authorization": f"Bearer {key}"})
        assert report.status_code == 200 and TENANT_TEXT not in report.text and "overloaded" not in report.text
        errors = [e for row in report.json()["data"] for e in row["recent_errors"]]
        assert all(set(e) == {"ts", "kind", "status"} for e in errors)
    if HANDLER_CHANGED:  # the admin sees the text; the restricted key its own routes only
        view = httpx.get(server.base_url + "/v1/providers", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert view.status_code == 200 and TENANT_TEXT in view.text
        mine = httpx.get(server.base_url + "/v1/providers", headers={"authorization": f"Bearer {restricted['key']}"})
        assert {row["route"] for row in mine.json()["data"]} == {"mock-1"}


@pytest.mark.parametrize(("status", "stream", "answer"), [(500, False, 502), (500, True, 502), (401, False, 401)])
def test_an_upstream_error_echoing_the_provider_key_reaches_the_client_redacted(server, upstream, status, stream,
                                                                                answer):
    upstream.add_faults({"kind": "echo_auth_error", "status": status, "path": "/v1/chat/completions"})
    response = chat(server, GATEWAY_KEY, stream=stream)
    text = response.text + json.dumps(dict(response.headers))
    assert response.status_code == answer, text
    assert UPSTREAM_KEY not in text and "[redacted]" in text
    # The mock really echoed it: the key went upstream in the Authorization header.
    last = upstream.stats()["requests"][-1]
    assert last["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    if HANDLER_CHANGED:
        view = httpx.get(server.base_url + "/v1/providers", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert UPSTREAM_KEY not in view.text


# -- 2. every configured secret out of the log ------------------------------------------------------
REDIS_PASSWORD = "r3dis-pa55word-integration"
SECRETS = {
    "FLAREGATE_SIGNING_SECRET": "signing-secret-integration-3333",
    "DD_API_KEY": "0123456789abcdef0123456789abcdef",
    "OTEL_EXPORTER_OTLP_HEADERS": "x-honeycomb-team=hcteam4444integration",
}
# Each one rides into the access log as a request id (what a client may set it to).
LOGGED = [SECRETS["FLAREGATE_SIGNING_SECRET"], SECRETS["DD_API_KEY"], "hcteam4444integration", REDIS_PASSWORD]


@pytest.fixture
def redis_with_password(tmp_path) -> Iterator[str]:
    """A password-protected redis-server for the local host (the Worker only parses the URL)."""
    if TARGET == "edge":
        yield f"redis://default:{REDIS_PASSWORD}@127.0.0.1:6379/0"
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--dir", str(tmp_path), "--requirepass", REDIS_PASSWORD],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        yield f"redis://default:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    finally:
        processes.stop(process)


def test_every_configured_secret_is_redacted_in_the_log(upstream, tmp_path, redis_with_password):
    env = upstream_env(upstream.base_url, LOG_LEVEL="info", FLAREGATE_REDIS_URL=redis_with_password,
                       DATADOG_API_URL=upstream.base_url, **SECRETS)
    with run_gateway(tmp_path / "secrets", env) as gateway:
        for secret in LOGGED:
            response = httpx.post(gateway.base_url + "/v1/chat/completions", timeout=10,
                                  json={"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]},
                                  headers={"authorization": f"Bearer {GATEWAY_KEY}", "x-request-id": secret})
            assert response.status_code == 200 and response.headers["x-request-id"] == secret
        deadline = time.monotonic() + 10  # the edge's log reaches wrangler's output a little later
        while _redacted_ids(gateway.log()) < len(LOGGED) and time.monotonic() < deadline:
            time.sleep(0.2)
        log = gateway.log()
    assert _redacted_ids(log) == len(LOGGED), log[-3000:]
    for secret in [*LOGGED, redis_with_password, *SECRETS.values()]:
        assert secret not in log, f"{secret} in the log"


def _redacted_ids(log: str) -> int:
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return sum(1 for e in entries if e.get("logger") == "flaregate.access" and e.get("request_id") == "[REDACTED]")


def test_the_tables_tests_exist():
    """docs/security.md's table names tests of this file: keep them in step."""
    doc = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    named = set(re.findall(r"test_security_hardening\.py::(test_\w+)", doc))
    assert named and named <= {name for name in globals() if name.startswith("test_")}
