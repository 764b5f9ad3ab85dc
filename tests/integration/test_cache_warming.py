"""Cache warming through the real server (or the Worker under wrangler dev with
FLAREGATE_TARGET=edge, where the job runs in ctx.waitUntil and its state lives in KV)."""

import json
import time
import uuid

import httpx
import pytest

from flaregate.security.keys import key_id
from flaregate.security.signing import sign_request

from .conftest import GATEWAY_KEY, run_gateway, upstream_env
from .test_cache import ADMIN_KEY, CHAT, upstream_calls

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
WARM = "/admin/cache/warm"


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, FLAREGATE_ADMIN_KEY=ADMIN_KEY)
    with run_gateway(tmp_path_factory.mktemp("warming"), env) as running:
        yield running


def admin(server, method: str, path: str, raw: bytes = b"", bearer: str | None = ADMIN_KEY) -> httpx.Response:
    headers = {"content-type": "application/json", **sign_request(ADMIN_KEY, method, path, raw)}
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer}"
    return httpx.request(method, server.base_url + path, content=raw, headers=headers, timeout=20)


def bodies(n: int) -> list[dict]:
    tag = uuid.uuid4().hex[:8]
    return [{"model": "gpt-test", "messages": [{"role": "user", "content": f"warm {tag} {i}"}]} for i in range(n)]


def finished(server, job: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        state = admin(server, "GET", f"{WARM}/{job}").json()
        if state["status"] != "running" or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def test_a_warm_job_fills_n_entries_then_n_requests_are_n_hits(server, upstream):
    requests = bodies(5)
    before = upstream_calls(upstream)
    started = admin(server, "POST", WARM, json.dumps({"key": GATEWAY_KEY, "requests": requests}).encode())
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["total"] == 5 and job["url"] == f"{WARM}/{job['id']}"
    state = finished(server, job["id"])
    assert state["status"] == "completed" and (state["done"], state["filled"], state["failed"]) == (5, 5, 0)
    assert [r["status"] for r in state["results"]] == [200] * 5
    for body in requests:
        response = httpx.post(server.base_url + CHAT, json=body, headers=AUTH, timeout=20)
        assert response.status_code == 200 and response.headers["x-flaregate-cache"] == "HIT"
    assert upstream_calls(upstream) - before == 5  # the job's calls, and none for the hits


def test_a_jsonl_job_charged_to_a_key_id_and_a_second_run_finds_everything_cached(server, upstream):
    requests = bodies(3)
    jsonl = "\n".join(json.dumps(r) for r in requests).encode()
    path = f"{WARM}?key_id={key_id(GATEWAY_KEY)}"
    first = finished(server, admin(server, "POST", path, jsonl).json()["id"])
    assert (first["status"], first["filled"]) == ("completed", 3)
    before = upstream_calls(upstream)
    again = finished(server, admin(server, "POST", path, jsonl).json()["id"])
    assert (again["already_cached"], again["filled"]) == (3, 0) and upstream_calls(upstream) == before
    assert again["key_id"] == key_id(GATEWAY_KEY)


def test_a_bad_item_fails_alone_with_its_status(server):
    items = [*bodies(1), {"model": "gpt-test"}]  # the second has no messages
    state = finished(server, admin(server, "POST", WARM, json.dumps({"key": GATEWAY_KEY, "requests": items})
                                   .encode()).json()["id"])
    assert (state["filled"], state["failed"]) == (1, 1) and state["results"][1]["status"] == 400


@pytest.mark.parametrize("raw", [
    b"{not json", b"[]", b'{"requests": [{"model": "gpt-test"}]}',  # no key named
    json.dumps({"key": GATEWAY_KEY, "requests": [1, 2]}).encode(),
    json.dumps({"key": GATEWAY_KEY, "requests": [], "extra": 1}).encode(),
    json.dumps({"key_id": "key_nope", "requests": [{"model": "gpt-test"}]}).encode(),
    json.dumps({"key": "fg-not-a-key", "requests": [{"model": "gpt-test"}]}).encode(),
    json.dumps({"key": GATEWAY_KEY, "requests": [{}], "headers": {"authorization": "x"}}).encode(),
])
def test_bad_job_bodies_are_400(server, raw):
    response = admin(server, "POST", WARM, raw)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_warm_request"


def test_an_unknown_job_is_404_and_the_admin_key_is_required(server):
    assert admin(server, "GET", f"{WARM}/warm_0123456789abcdef").status_code == 404
    assert admin(server, "GET", f"{WARM}/not-a-job").status_code == 404
    body = json.dumps({"key": GATEWAY_KEY, "requests": bodies(1)}).encode()
    assert admin(server, "POST", WARM, body, bearer=None).status_code == 401
    assert admin(server, "POST", WARM, body, bearer="wrong-admin-key").status_code == 401
    assert admin(server, "GET", f"{WARM}/warm_0123456789abcdef", bearer=None).status_code == 401
    assert admin(server, "DELETE", WARM).status_code == 405
