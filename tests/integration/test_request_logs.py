"""The request-log store through a real server (both hosts): every request becomes one
record, the filters find exactly the failed ones, one record with its events, JSON lines."""

import asyncio
import json
import os
import secrets
import time

import httpx
import pytest

from .conftest import ADMIN_KEY, GATEWAY_KEY, TARGET, run_gateway, upstream_env

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
API = {"authorization": f"Bearer {GATEWAY_KEY}"}
# 10 000 on the local host; workerd under `wrangler dev` is slower on this shared machine, so
# the edge run sends fewer by default (FLAREGATE_LOG_TEST_REQUESTS sets either).
VOLUME = int(os.environ.get("FLAREGATE_LOG_TEST_REQUESTS", "2000" if TARGET == "edge" else "10000"))
CONCURRENCY = 16


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, RETRY_BACKOFF_BASE_SECONDS="0.01", RETRY_BACKOFF_MAX_SECONDS="0.02",
                       RATE_LIMIT_CAPACITY="100000", RATE_LIMIT_REFILL_PER_SECOND="100000")
    with run_gateway(tmp_path_factory.mktemp("request-logs"), env) as gateway:
        yield gateway


def chat(model, content, **headers):
    return {"model": model, "messages": [{"role": "user", "content": content}]}, {**API, **headers}


def logs(server, **params):
    response = httpx.get(server.base_url + "/v1/logs", params=params, headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    return response


def wait_for(server, predicate, **params):
    deadline = time.monotonic() + 30  # events reach the hub in batches within ~100 ms
    while True:
        page = logs(server, **params).json()
        if predicate(page) or time.monotonic() > deadline:
            return page
        time.sleep(0.2)


def test_failed_requests_are_found_by_status_with_their_attempts(server):
    run = secrets.token_hex(4)
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    sent = {}
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for i in range(3):
            body, headers = chat("gpt-test", f"{run} ok {i}", **{"x-request-id": f"req_ok_{run}_{i}"})
            assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
        for i in range(2):
            body, headers = chat("gpt-dead", f"{run} dead {i}", traceparent=traceparent,
                                 **{"x-request-id": f"req_dead_{run}_{i}"})
            response = client.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 502
            sent[response.headers["x-request-id"]] = response
    since = str(time.time() - 600)
    page = wait_for(server, lambda p: len(p["data"]) >= 2, status="502", model="gpt-dead", since=since)
    assert {r["request_id"] for r in page["data"]} == set(sent)
    assert all(r["status"] == 502 and r["level"] == "error" for r in page["data"])
    assert logs(server, status="5xx", model="gpt-test", since=since).json()["data"] == []
    assert {r["request_id"] for r in logs(server, status="200", model="gpt-test").json()["data"]} >= {
        f"req_ok_{run}_{i}" for i in range(3)}

    one = httpx.get(f"{server.base_url}/v1/logs/req_dead_{run}_0", headers=ADMIN).json()
    assert one["request_id"] == f"req_dead_{run}_0"
    assert one["trace_id"] == traceparent.split("-")[1]
    assert one["upstream_attempts"] and all(not ok for _, ok in one["upstream_attempts"])
    assert isinstance(one["events"], list)
    assert "request_body" not in one and "response_body" not in one  # LOG_BODIES is off by default


def test_bad_log_queries_are_4xx(server):
    base = server.base_url
    assert httpx.get(base + "/v1/logs").status_code == 401
    assert httpx.get(base + "/v1/logs", headers=API).status_code == 401
    for params in ({"status": "abc"}, {"limit": "-1"}, {"cursor": "%%%"}, {"since": "noon"}, {"format": "xml"}):
        response = httpx.get(base + "/v1/logs", params=params, headers=ADMIN)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["error"]["code"] == "invalid_value"
    missing = httpx.get(base + "/v1/logs/req_nothing_here", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "log_not_found"
    assert httpx.get(base + "/v1/logs/" + "x" * 300, headers=ADMIN).status_code == 404


async def _send(server, count, run):
    ids: list[str] = []
    queue = iter(range(count))

    async def worker(client):
        for i in queue:
            response = await client.post("/v1/chat/completions", json={
                "model": "mock-1", "messages": [{"role": "user", "content": f"{run} {i}"}]}, headers=API)
            assert response.status_code == 200, response.text
            ids.append(response.headers["x-request-id"])

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
    return ids


def test_every_request_becomes_exactly_one_record(server):
    """VOLUME requests -> VOLUME records, none lost, none doubled (read back as JSON lines)."""
    run = secrets.token_hex(6)
    since = str(time.time() - 1)
    ids = asyncio.run(_send(server, VOLUME, run))
    assert len(set(ids)) == VOLUME

    def exported():
        text = logs(server, format="jsonl", model="mock-1", since=since).text
        return [json.loads(line) for line in text.splitlines()]

    deadline = time.monotonic() + 60
    records = exported()
    while len(records) < VOLUME and time.monotonic() < deadline:
        time.sleep(0.5)
        records = exported()
    got = [r["request_id"] for r in records if r.get("request_id") in set(ids)]
    assert len(got) == VOLUME and set(got) == set(ids)
    assert all(r["status"] == 200 and r["level"] == "info" for r in records)
    times = [r["ts"] for r in records]
    assert times == sorted(times, reverse=True)  # newest first
