"""/metrics, /v1/analytics, /health and the JSON logs of a real server after known traffic."""

import json
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

import flaregate.console

from .conftest import (
    ADMIN_KEY,
    GATEWAY_KEY,
    MEMORY_FIELD,
    MEMORY_METRIC,
    TARGET,
    UPSTREAM_KEY,
    run_gateway,
    upstream_env,
)

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
WRONG_KEY = "fg-wrong-key-abcdefghijkl"
# Prices live on the route targets (the same ones the budgets use): $1 / $2 a token.
PRICED_GPT_TEST = [{"provider": "upstream", "input_price_per_1m": 1_000_000, "output_price_per_1m": 2_000_000}]
TOTAL_REQUESTS = 12
DEAD_ATTEMPTS = 4 + 1  # UPSTREAM_MAX_ATTEMPTS for gpt-dead, one for gpt-failover


def ask(client, model, content, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **kw)


@pytest.fixture(scope="module")
def traffic(upstream, tmp_path_factory):
    """One server, one known mix of requests; the tests below read what it recorded."""
    # Retries as configured by default (UPSTREAM_MAX_ATTEMPTS 4), with short backoffs.
    env = upstream_env(upstream.base_url, RETRY_BACKOFF_BASE_SECONDS="0.01", RETRY_BACKOFF_MAX_SECONDS="0.02")
    env["FLAREGATE_ROUTES"] = json.dumps({**json.loads(env["FLAREGATE_ROUTES"]), "gpt-test": PRICED_GPT_TEST})
    with run_gateway(tmp_path_factory.mktemp("observability"), env) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20)
        usage = {"in": 0, "out": 0}
        for i in range(3):  # upstream, cache misses
            reply = ask(client, "gpt-test", f"question {i}")
            usage["in"] += reply.usage.prompt_tokens
            usage["out"] += reply.usage.completion_tokens
        ask(client, "gpt-test", "question 0")  # a cache hit: no upstream, no new tokens
        upstream.add_faults({"kind": "delay", "seconds": 0.3, "path": "/v1/chat/completions", "times": 2})
        for i in range(2):  # slow upstream answers
            reply = ask(client, "gpt-test", f"slow {i}")
            usage["in"] += reply.usage.prompt_tokens
            usage["out"] += reply.usage.completion_tokens
        for i in range(2):  # streams from the built-in mock
            assert "".join(c.choices[0].delta.content or "" for c in ask(client, "mock-1", f"s{i}", stream=True))
        with pytest.raises(openai.APIStatusError) as dead:
            ask(client, "gpt-dead", "anyone?")
        assert dead.value.status_code == 502
        assert ask(client, "gpt-failover", "fail over").choices[0].message.content
        bad = httpx.post(server.base_url + "/v1/chat/completions", json={"messages": []},
                         headers={"authorization": f"Bearer {GATEWAY_KEY}"})
        assert bad.status_code == 400
        assert httpx.post(server.base_url + "/v1/chat/completions", json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]},
                          headers={"authorization": f"Bearer {WRONG_KEY}"}).status_code == 401
        deadline = time.monotonic() + 10  # events reach the hub in batches within ~400 ms
        while time.monotonic() < deadline:
            metrics = httpx.get(server.base_url + "/metrics", headers=ADMIN).text
            if _total(metrics) == TOTAL_REQUESTS:
                break
            time.sleep(0.1)
        yield server, usage


def _total(text):
    family = next(f for f in text_string_to_metric_families(text) if f.name == "flaregate_requests")
    return sum(s.value for s in family.samples)


def families(server):
    response = httpx.get(server.base_url + "/metrics", headers=ADMIN)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def value(family, suffix="_total", **labels):
    return sum(s.value for s in family.samples if s.name == family.name + suffix
               and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_parse_and_match_the_traffic(traffic):
    server, usage = traffic
    m = families(server)
    key = next(s.labels["key"] for s in m["flaregate_requests"].samples if s.labels["model"] == "gpt-test")
    assert key.startswith("key_") and GATEWAY_KEY not in key
    requests = m["flaregate_requests"]
    assert value(requests) == TOTAL_REQUESTS
    assert value(requests, provider="upstream", model="gpt-test", key=key) == 6
    assert value(requests, provider="upstream", model="gpt-failover") == 1
    assert value(requests, provider="mock", model="mock-1") == 2
    assert value(requests, provider="dead", model="gpt-dead") == 1  # every target failed: the last one
    assert value(requests, provider="-", model="-", key="-") == 2  # 400 before auth, 401
    assert value(m["flaregate_cache_hits"], model="gpt-test") == 1
    assert value(m["flaregate_cache_misses"], model="gpt-test") == 5
    assert value(m["flaregate_streams"], model="mock-1") == 2
    errors = m["flaregate_errors"]
    assert value(errors, provider="dead", **{"class": "upstream_unreachable"}) == 1
    assert value(errors, **{"class": "bad_request"}) == 1 and value(errors, **{"class": "auth"}) == 1
    assert value(errors) == 3
    assert value(m["flaregate_failovers"], model="gpt-failover") == 1
    # gpt-dead: all 4 attempts on its one target; gpt-failover: dead once, then upstream.
    assert value(m["flaregate_upstream_attempts"], provider="dead") == DEAD_ATTEMPTS
    assert value(m["flaregate_upstream_attempt_failures"], provider="dead") == DEAD_ATTEMPTS
    assert value(m["flaregate_upstream_attempt_failures"], provider="upstream") == 0
    assert value(m["flaregate_tokens"], model="gpt-test", direction="in") == usage["in"]
    assert value(m["flaregate_tokens"], model="gpt-test", direction="out") == usage["out"]
    assert value(m["flaregate_cost_usd"], model="gpt-test") == pytest.approx(usage["in"] + 2 * usage["out"])
    duration = m["flaregate_request_duration_seconds"]
    assert value(duration, "_count", provider="upstream", model="gpt-test") == 6
    upstream_time = m["flaregate_upstream_duration_seconds"]
    slow = value(upstream_time, "_bucket", provider="upstream", model="gpt-test", le="+Inf") - \
        value(upstream_time, "_bucket", provider="upstream", model="gpt-test", le="0.25")
    assert slow >= 2  # the two answers the mock upstream delayed by 0.3 s
    assert value(m["flaregate_time_to_first_token_seconds"], "_count", model="mock-1") == 2
    assert value(m["flaregate_gateway_overhead_seconds"], "_count") == TOTAL_REQUESTS
    assert value(m["flaregate_health_score"], "") > 0
    assert value(m[MEMORY_METRIC], "") > 0


def test_metrics_and_analytics_refuse_gateway_keys(traffic):
    server, _ = traffic
    for path in ("/metrics", "/v1/analytics"):
        assert httpx.get(server.base_url + path, headers={"authorization": f"Bearer {GATEWAY_KEY}"}).status_code == 401
        assert httpx.get(server.base_url + path, params={"token": ADMIN_KEY}).status_code == 200


def test_analytics_windows_and_where_the_time_goes(traffic):
    server, _ = traffic
    data = httpx.get(server.base_url + "/v1/analytics", headers=ADMIN).json()
    assert set(data["windows"]) == {"1h", "24h", "30d", "1y"}
    for window in data["windows"].values():  # a fresh server: every window saw the same traffic
        assert window["requests"] == TOTAL_REQUESTS and window["failovers"] == 1
        assert window["by_provider"]["upstream"]["requests"] == 7
        assert window["by_model"]["mock-1"]["streams"] == 2
        assert window["errors_by_class"] == {"upstream_unreachable": 1, "bad_request": 1, "auth": 1}
        assert sum(point["requests"] for point in window["series"]) == TOTAL_REQUESTS
    hour = data["windows"]["1h"]
    assert hour["resolution_s"] == 60 and hour["by_provider"]["dead"]["availability"] == 0.0
    assert hour["latency_ms"]["ttft"]["count"] == 2
    view = data["where_the_time_goes"]
    assert view["samples"] == TOTAL_REQUESTS
    assert view["dominant"] == "upstream" and "provider" in view["recommendation"]
    assert [e["event"] for e in data["recent_events"]] == ["failover"]
    one = httpx.get(server.base_url + "/v1/analytics", params={"window": "24h"}, headers=ADMIN).json()
    assert list(one["windows"]) == ["24h"]
    bad = httpx.get(server.base_url + "/v1/analytics", params={"window": "2y"}, headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "window"


def test_health_has_the_score_and_process_memory(traffic):
    server, _ = traffic
    health = httpx.get(server.base_url + "/health").json()
    assert health["status"] == "ok"
    score = health["health"]
    # One failure in 12 requests (8.3 %); 5 of 13 provider calls failed (5 + 1 upstream, 2 mock, 5 dead).
    availability = round(8 / (8 + DEAD_ATTEMPTS), 4)
    assert score["failure_rate"] == round(1 / 12, 4) and score["availability"] == availability
    expected = round(100 * (0.5 * (1 - (1 / 12) / 0.10) + 0.25 * score["components"]["latency"] + 0.25 * availability))
    assert score["score"] == expected and score["status"] in ("healthy", "degraded", "unhealthy")
    assert health["process"][MEMORY_FIELD] > 1_000_000


def test_logs_are_json_with_anonymised_ips_and_no_secrets(traffic):
    server, _ = traffic
    log = server.log()
    for secret in (GATEWAY_KEY, UPSTREAM_KEY, ADMIN_KEY, WRONG_KEY):
        assert secret not in log
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [e for e in entries if e["logger"] == "flaregate.access"]
    assert len(access) == TOTAL_REQUESTS
    assert {e["client_ip"] for e in access} == {"127.0.0.0"}
    assert all(e["request_id"] and e["level"] == "info" for e in access)
    classes = sorted(e["error_class"] for e in access if "error_class" in e)
    assert classes == ["auth", "bad_request", "upstream_unreachable"]
    non_json = [line for line in log.splitlines() if line and not line.startswith("{")]
    if TARGET == "edge":  # the rest is wrangler's own output; no log line is prefixed or wrapped
        assert not [line for line in non_json if '"logger"' in line]
    else:
        assert all(line.startswith("Flaregate ") for line in non_json)  # only the start banner


def test_the_dashboard_files_are_served_as_they_are_in_the_package(traffic):
    """On the edge they come from the bundle's Text modules, locally from the package: byte for
    byte the files of src/flaregate/console/static/, and nothing else under /dashboard/."""
    server, _ = traffic
    static = Path(flaregate.console.__file__).parent / "static"
    for path, name in [("/dashboard", "dashboard.html"), ("/dashboard/live.js", "live.js"),
                       ("/dashboard/requests.js", "requests.js"), ("/dashboard/history.js", "history.js"),
                       ("/dashboard/teams.js", "teams.js"),
                       ("/dashboard/dashboard.css", "dashboard.css")]:
        answer = httpx.get(server.base_url + path)
        assert answer.status_code == 200 and answer.content == (static / name).read_bytes(), path
        assert "unsafe-inline" not in answer.headers["content-security-policy"]
    for path in ["/dashboard/dashboard.html", "/dashboard/missing.js", "/dashboard/..%2Fdashboard.py"]:
        answer = httpx.get(server.base_url + path)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_url", path
