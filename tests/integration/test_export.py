"""The OpenTelemetry and Datadog exporters against a real receiver process (both hosts).

The receiver decodes the OTLP/JSON bodies into the ``opentelemetry-proto`` messages, so a
payload the spec rejects fails the test. A target that is down: every API answer is still
right, and each exporter's records are either still queued (never more than the queue's
capacity) or counted as dropped.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import httpx
import pytest

from tests.support.telemetry_receiver import TelemetryReceiverProcess
from tests.support.waiting import eventually

from .conftest import ADMIN_KEY, GATEWAY_KEY, free_port, run_gateway, upstream_env

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
DD_KEY = "dd-test-api-key-0123456789abcdef"
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_METRIC_EXPORT_INTERVAL": "500",
               "DATADOG_FLUSH_SECONDS": "0.5", "EXPORT_RETRY_BASE_SECONDS": "0.05"}


@pytest.fixture(scope="module")
def receiver():
    with TelemetryReceiverProcess() as process:
        yield process


@pytest.fixture(scope="module")
def exporting(upstream, receiver, tmp_path_factory):
    env = upstream_env(upstream.base_url, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.base_url,
                       OTEL_SERVICE_NAME="flaregate-test", DD_API_KEY=DD_KEY, DATADOG_API_URL=receiver.base_url,
                       DD_LOGS_ENABLED="true", DATADOG_LOGS_URL=receiver.base_url, DD_TAGS="team:gateway",
                       **FAST_EXPORT)
    with run_gateway(tmp_path_factory.mktemp("export"), env) as server:
        yield server


def _wait(fetch, done, timeout: float = 60.0) -> Any:
    return eventually(fetch, done, timeout, interval=0.25)


def _chat(base_url: str, model: str, traceparent: str) -> httpx.Response:
    return httpx.post(base_url + "/v1/chat/completions", timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "hello " + model}]},
                      headers={"authorization": f"Bearer {GATEWAY_KEY}", "traceparent": traceparent})


def test_one_span_per_request_on_the_callers_trace_with_genai_attributes(exporting, receiver):
    import openai

    client = openai.OpenAI(base_url=exporting.base_url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20)
    sent: dict[str, dict[str, Any]] = {}
    for i in range(5):
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": f"span test {i}"}],
            extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"})
        completion = raw.parse()
        ours = raw.headers["traceparent"].split("-")
        assert ours[1] == trace_id  # the gateway stays on the caller's trace
        sent[raw.headers["x-request-id"]] = {"trace_id": trace_id, "parent": parent, "span_id": ours[2],
                                             "usage": completion.usage}
    failed_trace = secrets.token_hex(16)
    failed = _chat(exporting.base_url, "gpt-dead", f"00-{failed_trace}-{secrets.token_hex(8)}-01")
    assert failed.status_code == 502

    def spans_by_request() -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for span in receiver.received()["spans"]:
            found.setdefault(span["attributes"].get("flaregate.request_id"), []).append(span)
        return found

    wanted = {*sent, failed.headers["x-request-id"]}
    spans = _wait(spans_by_request, lambda found: wanted <= set(found))
    assert wanted <= set(spans), receiver.received()["posts"][-5:]
    for request_id, expected in sent.items():
        assert len(spans[request_id]) == 1  # exactly one span per request
        span = spans[request_id][0]
        attributes = span["attributes"]
        assert span["trace_id"] == expected["trace_id"]
        assert span["parent_span_id"] == expected["parent"]
        assert span["span_id"] == expected["span_id"]
        assert span["kind"] == 2 and span["name"] == "chat gpt-test" and span["end"] >= span["start"] > 0
        assert span["resource"]["service.name"] == "flaregate-test"
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "openai"
        assert attributes["gen_ai.request.model"] == "gpt-test"
        assert attributes["gen_ai.response.model"] == "gpt-test"
        assert attributes["gen_ai.usage.input_tokens"] == expected["usage"].prompt_tokens
        assert attributes["gen_ai.usage.output_tokens"] == expected["usage"].completion_tokens
        assert attributes["http.response.status_code"] == 200 and "error.type" not in attributes
    failed_span = spans[failed.headers["x-request-id"]][0]
    assert failed_span["trace_id"] == failed_trace
    assert failed_span["attributes"]["http.response.status_code"] == 502
    assert failed_span["attributes"]["error.type"] and failed_span["status_code"] == 2  # STATUS_CODE_ERROR


def test_metrics_reach_otlp_and_datadog_with_the_api_key(exporting, receiver):
    run = secrets.token_hex(4)
    for _ in range(3):
        assert _chat(exporting.base_url, "gpt-test", f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
                     ).status_code == 200

    def requests_counted(received: dict[str, Any]) -> tuple[int, int]:
        otlp = sum(p["value"] for p in received["metrics"] if p["name"] == "flaregate.requests"
                   and p["attributes"].get("gen_ai.request.model") == "gpt-test")
        datadog = sum(s["points"][0]["value"] for s in received["series"] if s["metric"] == "flaregate.requests"
                      and "model:gpt-test" in s["tags"])
        return otlp, datadog

    received = _wait(receiver.received, lambda r: min(requests_counted(r)) >= 3)
    otlp, datadog = requests_counted(received)
    assert otlp >= 3 and datadog >= 3, (run, received["posts"][-5:])
    names = {p["name"] for p in received["metrics"]}
    assert {"flaregate.requests", "gen_ai.server.request.duration", "gen_ai.client.token.usage"} <= names
    assert all(p["temporality"] == 1 for p in received["metrics"])  # delta
    tokens = [p for p in received["metrics"] if p["name"] == "gen_ai.client.token.usage"]
    assert {p["attributes"]["gen_ai.token.type"] for p in tokens} == {"input", "output"}
    series = [s for s in received["series"] if s["metric"] == "flaregate.requests"]
    assert all("team:gateway" in s["tags"] and s["type"] == 1 for s in series)
    datadog_posts = [p for p in received["posts"] if p["path"].startswith("/api/v2/")]
    assert datadog_posts and all(p["headers"].get("dd-api-key") == DD_KEY for p in datadog_posts)
    otlp_posts = [p for p in received["posts"] if p["path"].startswith("/v1/")]
    assert otlp_posts and all(p["status"] == 200 for p in otlp_posts)  # every body decoded
    assert all("dd-api-key" not in p["headers"] for p in otlp_posts)
    logs = _wait(receiver.received, lambda r: any(item.get("model") == "gpt-test" for item in r["logs"]))["logs"]
    assert any(item.get("model") == "gpt-test" and item["ddsource"] == "flaregate" for item in logs)


def _metric(text: str, name: str, exporter: str) -> float:
    match = re.search(rf'^{name}{{exporter="{exporter}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else -1.0


def test_a_target_that_is_down_costs_the_api_nothing_and_the_queue_stays_bounded(upstream, tmp_path_factory):
    dead = f"http://127.0.0.1:{free_port()}"
    capacity = 5
    env = upstream_env(upstream.base_url, OTEL_EXPORTER_OTLP_ENDPOINT=dead, OTEL_BSP_MAX_QUEUE_SIZE=str(capacity),
                       OTEL_BSP_MAX_EXPORT_BATCH_SIZE="2", EXPORT_MAX_ATTEMPTS="2", DD_API_KEY=DD_KEY,
                       DATADOG_API_URL=dead, DATADOG_QUEUE_SIZE=str(capacity), **FAST_EXPORT)
    total = 30
    with run_gateway(tmp_path_factory.mktemp("export-down"), env) as server:
        for i in range(total):
            response = httpx.post(server.base_url + "/v1/chat/completions", timeout=30, headers={
                "authorization": f"Bearer {GATEWAY_KEY}"}, json={
                "model": "gpt-test", "messages": [{"role": "user", "content": f"down {i}"}]})
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"] == f"echo: down {i}"
        exporters = ("otlp_traces", "otlp_metrics", "datadog_series")

        def accounted(text: str) -> bool:  # every record is either queued or counted as dropped
            return all(_metric(text, "flaregate_export_dropped_total", name)
                       + _metric(text, "flaregate_export_queue_size", name) == total for name in exporters)

        metrics = _wait(lambda: httpx.get(server.base_url + "/metrics", headers=ADMIN, timeout=10).text, accounted)
        for name in exporters:
            assert _metric(metrics, "flaregate_export_sent_total", name) == 0
            assert _metric(metrics, "flaregate_export_dropped_total", name) >= total - capacity
            assert 0 <= _metric(metrics, "flaregate_export_queue_size", name) <= capacity
        assert accounted(metrics), metrics
        health = httpx.get(server.base_url + "/health", timeout=10).json()
        assert health["status"] == "ok"
        for name in exporters:
            assert health["exporters"][name]["dropped"] >= total - capacity
            assert health["exporters"][name]["queued"] <= health["exporters"][name]["capacity"] == capacity


def test_replicas_over_redis_export_each_request_once(upstream, receiver, tmp_path):
    """Every replica's hub folds every replica's events (Redis stream); only the replica
    that answered a request exports it."""
    from contextlib import ExitStack

    from tests.support.redis_server import RedisServer

    from .conftest import TARGET, run_local_gateway

    if TARGET != "local":
        pytest.skip("Redis replicas are the standalone host's; the edge has one hub object")
    try:
        redis = RedisServer(tmp_path / "redis")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    redis.start()
    try:
        env = upstream_env(upstream.base_url, FLAREGATE_REDIS_URL=redis.url, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.base_url,
                           OTEL_METRICS_EXPORTER="none", **FAST_EXPORT)
        with ExitStack() as stack:
            urls = [stack.enter_context(run_local_gateway(tmp_path / f"replica{i}", env)).base_url for i in range(2)]
            ids = [_chat(urls[i % 2], "gpt-test", f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
                         ).headers["x-request-id"] for i in range(10)]

            def spans_for_ids() -> list[str]:
                return [s["attributes"].get("flaregate.request_id") for s in receiver.received()["spans"]
                        if s["attributes"].get("flaregate.request_id") in ids]

            found = _wait(spans_for_ids, lambda spans: set(ids) <= set(spans))
            time.sleep(1.5)  # a duplicate from the other replica would arrive within its schedule delay
            found = spans_for_ids()
            assert sorted(found) == sorted(ids)  # each once
    finally:
        redis.stop()
