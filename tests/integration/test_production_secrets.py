"""The production environment refuses placeholder secrets on both hosts: the standalone server
does not start; the Worker (which has no start-up step) answers 503 ``misconfigured`` to every
request, with the reason in its log only. Run with the production variables of wrangler.toml
set in the dev environment (``--env production`` needs Cloudflare's network for its AI binding)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from .conftest import TARGET, free_port, run_edge_gateway, run_gateway

WRANGLER = Path(__file__).resolve().parents[2] / "wrangler.toml"
PRODUCTION_VARS = tomllib.loads(WRANGLER.read_text())["env"]["production"]["vars"]
WEAK = {**PRODUCTION_VARS, "FLAREGATE_API_KEYS": "fg-change-me", "FLAREGATE_ADMIN_KEY": "fga-change-me"}
STRONG = {**PRODUCTION_VARS, "FLAREGATE_API_KEYS": "fg-" + "7e" * 20, "FLAREGATE_ADMIN_KEY": "fga-" + "9d" * 20,
          "FLAREGATE_SIGNING_SECRET": "sig-" + "4c" * 20}


def test_placeholder_secrets_are_refused_in_production(tmp_path):
    assert PRODUCTION_VARS["ENVIRONMENT"] == "production"
    if TARGET == "edge":
        with run_edge_gateway(tmp_path, WEAK) as server:
            for method, path in (("GET", "/health"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
                response = httpx.request(method, server.base_url + path, timeout=30,
                                         headers={"authorization": "Bearer fg-change-me"})
                assert response.status_code == 503, (path, response.text)
                assert response.json()["error"]["code"] == "misconfigured"
                assert "FLAREGATE_ADMIN_KEY" not in response.text and "change-me" not in response.text
            assert "FLAREGATE_ADMIN_KEY is a placeholder" in server.log()
        return
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLAREGATE_", "RATE_LIMIT", "CACHE_"))}
    result = subprocess.run([sys.executable, "-m", "flaregate", "serve", "--port", str(free_port()),
                             "--data-dir", str(tmp_path)], env={**clean, **WEAK}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "FLAREGATE_ADMIN_KEY is a placeholder" in result.stderr and "FLAREGATE_API_KEYS[0]" in result.stderr
    assert "Traceback" not in result.stderr


def test_strong_distinct_secrets_serve_in_production(tmp_path):
    with run_gateway(tmp_path, STRONG) as server:
        health = httpx.get(server.base_url + "/health", timeout=30)
        assert health.status_code == 200 and health.json()["environment"] == "production"
        answer = httpx.post(server.base_url + "/v1/chat/completions", timeout=30,
                            headers={"authorization": f"Bearer {STRONG['FLAREGATE_API_KEYS']}"},
                            json={"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200, answer.text


@pytest.mark.skipif(TARGET == "edge", reason="the local host's own created admin key (the Worker creates none)")
def test_a_created_admin_key_may_not_sign_in_production(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLAREGATE_", "RATE_LIMIT", "CACHE_"))}
    env = {**clean, **PRODUCTION_VARS, "FLAREGATE_API_KEYS": STRONG["FLAREGATE_API_KEYS"]}
    result = subprocess.run([sys.executable, "-m", "flaregate", "serve", "--port", str(free_port()),
                             "--data-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "FLAREGATE_SIGNING_SECRET must be set" in result.stderr
