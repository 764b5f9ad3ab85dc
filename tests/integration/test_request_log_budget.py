"""The request-log store's byte budget and info sampling through a real server (both hosts):
past LOG_MAX_BYTES the class over its share loses its oldest records, errors stay, and the
sampler keeps every error and warning while the info records it keeps weigh what it left
out; all of it counted in /health and /metrics."""

import re
import time

import httpx
import pytest

from .conftest import ADMIN_KEY, GATEWAY_KEY, run_gateway, upstream_env

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
API = {"authorization": f"Bearer {GATEWAY_KEY}"}
BUDGET = 32_000
RATE = 5  # info records kept per second before sampling
WARNINGS, ERRORS, INFOS = 300, 10, 300


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, LOG_MAX_BYTES=str(BUDGET), LOG_SAMPLE_INFO_PER_SECOND=str(RATE),
                       RATE_LIMIT_CAPACITY="100000", RATE_LIMIT_REFILL_PER_SECOND="100000")
    with run_gateway(tmp_path_factory.mktemp("log-budget"), env) as gateway:
        yield gateway


def all_records(server, **params):
    records, cursor = [], None
    while True:
        query = {"limit": "200", **params, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(server.base_url + "/v1/logs", params=query, headers=ADMIN, timeout=30).json()
        records += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            return records


def metric(text, name, **labels):
    wanted = re.escape(",".join(f'{k}="{v}"' for k, v in labels.items()))
    match = re.search(rf"^{name}{{{wanted}}} (\S+)$" if wanted else rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def test_the_budget_holds_errors_stay_and_sampling_weighs_what_it_keeps(server):
    errors, warnings = [], []
    with httpx.Client(base_url=server.base_url, timeout=30, headers=API) as client:
        for i in range(ERRORS):
            response = client.post("/v1/chat/completions",
                                   json={"model": "gpt-dead", "messages": [{"role": "user", "content": f"e{i}"}]})
            assert response.status_code == 502
            errors.append(response.headers["x-request-id"])
        for _ in range(WARNINGS):  # a bad body of a known key: a warning
            response = client.post("/v1/chat/completions", json={"model": "mock-1", "messages": "not a list"})
            assert response.status_code == 400
            warnings.append(response.headers["x-request-id"])
        for i in range(INFOS):
            response = client.post("/v1/chat/completions",
                                   json={"model": "mock-1", "messages": [{"role": "user", "content": f"i{i}"}]})
            assert response.status_code == 200
    deadline = time.monotonic() + 30
    while True:  # every batch has reached the hub once the last warning and error are there
        health = httpx.get(server.base_url + "/health", headers=ADMIN, timeout=30).json()
        logs = health["request_logs"]
        seen = sum(c["records"] + c["evicted"] + c["sampled_out"] for c in logs["classes"].values())
        if seen >= ERRORS + WARNINGS + INFOS or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert seen == ERRORS + WARNINGS + INFOS, logs
    assert logs["budget_bytes"] == BUDGET and 0 < logs["bytes"] <= BUDGET
    warn = logs["classes"]["warn"]
    assert warn["evicted"] > 0 and warn["records"] + warn["evicted"] == WARNINGS
    assert logs["classes"]["error"]["evicted"] == 0

    assert sorted(r["request_id"] for r in all_records(server, level="error")) == sorted(errors)
    kept_warnings = [r["request_id"] for r in all_records(server, level="warn")]
    assert kept_warnings == warnings[::-1][:len(kept_warnings)]  # the newest, in order: the oldest went
    assert all("sample_weight" not in r for r in all_records(server, level="warn"))

    info = all_records(server, level="info")
    sampled_out = logs["classes"]["info"]["sampled_out"]
    assert sampled_out > 0 and len(info) + sampled_out + logs["classes"]["info"]["evicted"] == INFOS
    assert any(r.get("sample_weight", 1) > 1 for r in info)
    assert sum(r.get("sample_weight", 1) for r in info) <= INFOS

    text = httpx.get(server.base_url + "/metrics", headers=ADMIN, timeout=30).text
    assert metric(text, "flaregate_request_log_budget_bytes") == BUDGET
    assert metric(text, "flaregate_request_log_evicted_total", **{"class": "warn"}) == warn["evicted"]
    assert metric(text, "flaregate_request_log_sampled_out_total", **{"class": "info"}) == sampled_out
    assert metric(text, "flaregate_request_log_bytes", **{"class": "error"}) > 0
