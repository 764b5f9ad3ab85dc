"""A flood of bad tokens against the real server (and, with FLAREGATE_TARGET=edge, the
Worker under `wrangler dev`): its request-log records stay in the unauthenticated bucket
(LOG_UNAUTHENTICATED_MAX_RECORDS), so an earlier authenticated error record survives it."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest

from .conftest import ADMIN_KEY, GATEWAY_KEY, run_gateway, upstream_env
from .test_observer_access import chat, records, wait_for_record

BUCKET = 40
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    # The throttle's 429s are unauthenticated records too; the window is short, to wait out.
    env = upstream_env(upstream.base_url, LOG_UNAUTHENTICATED_MAX_RECORDS=str(BUCKET), AUTH_FAILURE_LIMIT="20",
                       AUTH_FAILURE_WINDOW_SECONDS="2", CACHE_TTL_SECONDS="0", UPSTREAM_MAX_ATTEMPTS="1")
    with run_gateway(tmp_path_factory.mktemp("log-bucket"), env) as gateway:
        yield gateway


def test_a_flood_of_bad_tokens_never_evicts_a_real_error_from_the_request_log(server):
    run = secrets.token_hex(4)
    real = f"req_real_{run}"
    failed = chat(server, GATEWAY_KEY, "gpt-dead", **{"x-request-id": real})
    assert failed.status_code >= 500
    wait_for_record(server, real)
    flood = [f"req_flood_{run}_{i}" for i in range(3 * BUCKET)]
    with httpx.Client(base_url=server.base_url, timeout=20) as client:
        for request_id in flood:
            bad = "fg-" + secrets.token_urlsafe(32)
            answer = client.post("/v1/chat/completions", json={"model": "mock-1", "messages": []},
                                 headers={"authorization": f"Bearer {bad}", "x-request-id": request_id})
            assert answer.status_code in (401, 429)
    wait_for_record(server, flood[-1])
    time.sleep(1.0)  # the last batches
    kept = [r for status in ("401", "429") for r in records(server, status=status)]
    assert {r["request_id"] for r in kept} & set(flood)  # recorded...
    assert len(kept) <= BUCKET  # ...in a bucket of at most LOG_UNAUTHENTICATED_MAX_RECORDS
    assert not records(server, request_id=flood[0])  # the bucket's oldest went first
    record = httpx.get(server.base_url + f"/v1/logs/{real}", headers=ADMIN, timeout=15)
    assert record.status_code == 200 and record.json()["key_id"] and record.json()["status"] == failed.status_code
    time.sleep(2.5)  # the throttle's window, for whatever runs next from this network
