"""Key rotation with a grace period and the coarse last-used time, through the real server
or the Worker under ``wrangler dev``."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import run_gateway, upstream_env
from .test_teams import admin, make_key

CHAT = {"model": "gpt-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def chat(base_url: str, key: str) -> int:
    return httpx.post(base_url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"},
                      timeout=30).status_code


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    with run_gateway(tmp_path_factory.mktemp("lifecycle"), upstream_env(upstream.base_url)) as gateway:
        yield gateway


def test_rotation_keeps_the_old_secret_for_its_grace_period_only(server):
    base = server.base_url
    made = make_key(base, name="svc")
    assert chat(base, made["key"]) == 200
    rotated = admin(base, "POST", f"/admin/keys/{made['id']}/rotate", {"grace_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["id"] == made["id"] and new["key"] != made["key"]
    assert chat(base, made["key"]) == 200 and chat(base, new["key"]) == 200  # both, during the grace
    # Rotating again with no grace: the secret before is refused at once, the newest works.
    newest = admin(base, "POST", f"/admin/keys/{made['id']}/rotate", {"grace_seconds": 0}).json()
    assert chat(base, new["key"]) == 401 and chat(base, made["key"]) == 401
    assert chat(base, newest["key"]) == 200
    bad = admin(base, "POST", f"/admin/keys/{made['id']}/rotate", {"grace_seconds": -5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "grace_seconds"


def test_last_used_is_recorded_to_the_minute(server):
    base = server.base_url
    made = make_key(base)
    assert admin(base, "GET", f"/admin/keys/{made['id']}").json().get("last_used_at") is None
    before = time.time()
    for _ in range(5):
        assert chat(base, made["key"]) == 200
    for _ in range(100):  # written in the background just after the first request
        seen = admin(base, "GET", f"/admin/keys/{made['id']}").json().get("last_used_at")
        if seen is not None:
            break
        time.sleep(0.05)
    assert seen is not None and seen % 60 == 0 and before - 60 <= seen <= time.time()
