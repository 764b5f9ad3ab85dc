"""Every API route, read from the gateway's own route table (``/openapi.json`` is generated
from it), behaves the same on both hosts: a bad key is a 401, a wrong method a 405, an
overload (load shedding on) a 503 ``overloaded``, and each request that reached an operation
leaves exactly one request-log record and one analytics event. A route added later is
covered without editing this file: the table declares its example body (JSON, or a
multipart form whose file fields the schema marks as binary: sent as files, after the text
fields)."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx
import pytest

from .conftest import ADMIN_KEY, GATEWAY_KEY, run_gateway, upstream_env

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CHAT = "/v1/chat/completions"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    # A fixed in-flight limit of 2: low priority may hold 1 of it.
    env = upstream_env(upstream.base_url, LOAD_SHEDDING="true", SHED_INITIAL_LIMIT="2", SHED_MIN_LIMIT="2",
                       SHED_MAX_LIMIT="2", CACHE_TTL_SECONDS="0", FLAREGATE_ADMIN_KEY=ADMIN_KEY)
    with run_gateway(tmp_path_factory.mktemp("conformance"), env) as gw:
        yield gw


@pytest.fixture(scope="module")
def api(server):
    spec = httpx.get(server.base_url + "/openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.1")
    routes = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            example = _example(spec, (operation.get("requestBody") or {}).get("content", {}))
            routes.append((path, method.upper(), example, operation.get("x-flaregate-upstream", False), set(item)))
    assert {"/v1/chat/completions", "/v1/embeddings", "/v1/messages", "/v1/responses", "/v1/models",
            "/v1/moderations", "/v1/images/generations", "/v1/audio/speech", "/v1/audio/transcriptions"} <= {
        r[0] for r in routes}
    return routes


def _example(spec: dict, content: dict) -> dict | None:
    """The httpx arguments that send a route's example body (None: it has none)."""
    if "application/json" in content:
        example = content["application/json"].get("example")
        return None if example is None else {"json": example}
    form = content.get("multipart/form-data")
    if form is None or form.get("example") is None:
        return None
    schema = form["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    files = {name for name, prop in schema.get("properties", {}).items()
             if prop.get("contentMediaType") or prop.get("format") == "binary"}
    return {"data": {k: str(v) for k, v in form["example"].items() if k not in files},
            "files": {k: (f"example-{k}", str(v).encode()) for k, v in form["example"].items() if k in files}}


def _send(server, method: str, path: str, example, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(method, server.base_url + path, **(example or {}), headers=headers, timeout=30)


def _requests_counted(server) -> float:
    text = httpx.get(server.base_url + "/metrics", headers=ADMIN, timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("flaregate_requests_total{"))


def _records(server, request_id: str, want: int = 1) -> list[dict]:
    deadline = time.monotonic() + 20  # events reach the hub in batches
    while True:
        data = httpx.get(server.base_url + "/v1/logs", params={"request_id": request_id}, headers=ADMIN,
                         timeout=10).json()["data"]
        if len(data) >= want or time.monotonic() > deadline:
            time.sleep(0.5)  # a duplicate would arrive in the same or the next batch
            return httpx.get(server.base_url + "/v1/logs", params={"request_id": request_id}, headers=ADMIN,
                             timeout=10).json()["data"]
        time.sleep(0.2)


def test_every_api_route_refuses_a_bad_key_and_a_wrong_method(server, api):
    run = secrets.token_hex(4)
    before = _requests_counted(server)
    sent = []
    for path, method, example, _, methods in api:
        rid = f"req_conf401_{run}_{len(sent)}"
        refused = _send(server, method, path, example, {"authorization": "Bearer fg-not-a-real-key-000000", "x-request-id": rid})
        assert refused.status_code == 401, (path, refused.text)
        assert refused.headers["x-request-id"] == rid
        if example is not None:  # an operation (GET /v1/models reads the key only: no record)
            sent.append(rid)
        wrong = next(m for m in METHODS if m.lower() not in methods)
        answer = _send(server, wrong, path, None, {"authorization": f"Bearer {GATEWAY_KEY}"})
        assert answer.status_code == 405, (path, wrong, answer.text)
        assert set(answer.headers["allow"].split(", ")) == {m.upper() for m in methods}
    for rid in sent:
        records = _records(server, rid)
        assert len(records) == 1 and records[0]["status"] == 401, (rid, records)
    assert _requests_counted(server) - before == len(sent)  # one analytics event each, no more


async def test_every_upstream_route_sheds_an_overload_with_503(server, upstream, api):
    run = secrets.token_hex(4)
    upstream.add_faults({"kind": "delay", "seconds": 4.0, "path": CHAT, "times": 1})
    low = {"authorization": f"Bearer {GATEWAY_KEY}", "x-flaregate-priority": "low"}
    shed_routes = [r for r in api if r[3]]
    assert shed_routes, "no API route declares that it goes upstream"
    before = _requests_counted(server)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            held = asyncio.ensure_future(client.post(CHAT, headers=low, json={
                "model": "gpt-test", "messages": [{"role": "user", "content": f"hold {run}"}]}))
            await asyncio.sleep(1.0)  # the held request has the low share of the limit
            answers = {}
            for i, (path, method, example, _, _) in enumerate(shed_routes):
                rid = f"req_conf503_{run}_{i}"
                answers[rid] = (path, await client.request(method, path, **(example or {}),
                                                           headers={**low, "x-request-id": rid}))
            assert (await held).status_code == 200
    finally:
        upstream.reset()
    for rid, (path, response) in answers.items():
        assert response.status_code == 503, (path, response.text)
        error = response.json().get("error") or {}
        assert error.get("type") in ("api_error", "overloaded_error") and int(response.headers["retry-after"]) >= 1
        assert error.get("code") == "overloaded" or error.get("type") == "overloaded_error", (path, error)
        records = _records(server, rid)
        assert len(records) == 1 and records[0]["status"] == 503, (rid, records)
    assert _requests_counted(server) - before == len(answers) + 1  # and the held one


def test_every_api_route_answers_its_example_once(server, api):
    run = secrets.token_hex(4)
    before = _requests_counted(server)
    ids = []
    for i, (path, method, example, _, _) in enumerate(api):
        rid = f"req_conf200_{run}_{i}"
        answer = _send(server, method, path, example, {"authorization": f"Bearer {GATEWAY_KEY}", "x-request-id": rid})
        assert answer.status_code == 200, (path, answer.text)
        if example is not None:  # an operation (GET /v1/models is no operation: no record)
            ids.append(rid)
    for rid in ids:
        records = _records(server, rid)
        assert len(records) == 1 and records[0]["status"] == 200, (rid, records)
    assert _requests_counted(server) - before == len(ids)
