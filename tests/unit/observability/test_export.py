"""The exporters' queue (batches, backoff, bounded drops), settings and encodings."""

from __future__ import annotations

import json

import pytest

from flaregate.config import ConfigError, settings_from_vars
from flaregate.observability.export.otlp import OtlpEncoder
from flaregate.observability.export.queue import ExportQueue
from flaregate.observability.export.records import export_record, operation
from flaregate.observability.export.settings import ExportSettings


def test_a_full_queue_drops_new_items_and_counts_them():
    queue = ExportQueue(capacity=3, batch_size=2, interval=5)
    queue.offer([1, 2], now=0)
    assert queue.next_at == 0  # a full batch need not wait for the interval
    queue.offer([3, 4, 5], now=0)
    assert len(queue) == 3 and queue.dropped == 2
    assert queue.batch() == [1, 2]


def test_a_failed_batch_backs_off_exponentially_then_is_dropped():
    queue = ExportQueue(capacity=10, batch_size=2, interval=5, max_attempts=3, retry_base_seconds=1)
    queue.offer([1, 2, 3], now=0)
    queue.failed(2, now=10, error="down")
    assert queue.next_at == 11 and len(queue) == 3
    queue.failed(2, now=11, error="down")
    assert queue.next_at == 13
    queue.failed(2, now=13, error="down")  # the last attempt: the batch goes, counted
    assert len(queue) == 1 and queue.dropped == 2 and queue.batch() == [3]
    assert queue.next_at == 18  # the rest waits for the interval again


def test_a_rejected_batch_is_not_retried():
    queue = ExportQueue(capacity=10, batch_size=5, interval=1)
    queue.offer([1, 2], now=0)
    queue.failed(2, now=1, error="HTTP 400", retry=False)
    assert len(queue) == 0 and queue.dropped == 2 and queue.next_at is None


def test_sent_batches_leave_the_queue():
    queue = ExportQueue(capacity=10, batch_size=2, interval=1)
    queue.offer([1, 2, 3], now=0)
    queue.sent_ok(2, now=0.5)
    assert queue.batch() == [3] and queue.sent == 2 and queue.next_at == 1.5


def test_settings_follow_the_standard_variable_names():
    settings = settings_from_vars({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example/", "OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b,x=1",
        "OTEL_METRICS_EXPORTER": "none", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod",
        "DD_API_KEY": "secret", "DD_SITE": "datadoghq.eu", "DD_TAGS": "team:a env:prod"})
    otlp, dd = settings.export.otlp, settings.export.datadog
    assert otlp.url("traces") == "https://otel.example/v1/traces" and otlp.url("metrics") is None
    assert otlp.signal_headers("traces") == {"api-key": "a b", "x": "1"}
    assert dd.series_url() == "https://api.datadoghq.eu/api/v2/series" and dd.tags == ("team:a", "env:prod")
    assert "secret" not in repr(settings.export)
    assert not ExportSettings().enabled  # off by default
    for bad in ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, {"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}):
        with pytest.raises(ConfigError):
            settings_from_vars(bad)


def test_a_span_carries_the_trace_its_parent_and_the_genai_attributes():
    record = export_record({"ts": 100.0, "latency_ms": 250.0, "status": 200, "path": "/v1/embeddings",
                            "trace_id": "a" * 32, "span_id": "b" * 16, "parent_span_id": "c" * 16,
                            "model": "emb", "provider": "hf", "upstream_model": "bge", "tokens_in": 7})
    assert record is not None
    body = json.loads(OtlpEncoder("svc", {}, {"hf": "huggingface"}).traces([record]))
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    attributes = {a["key"]: a["value"] for a in span["attributes"]}
    assert (span["traceId"], span["spanId"], span["parentSpanId"]) == ("a" * 32, "b" * 16, "c" * 16)
    assert span["endTimeUnixNano"] == str(int(100.25e9)) and span["name"] == "embeddings emb"
    assert attributes["gen_ai.provider.name"] == {"stringValue": "hugging_face"}
    assert attributes["gen_ai.usage.input_tokens"] == {"intValue": "7"}
    assert "gen_ai.usage.output_tokens" not in attributes
    assert export_record({"status": 200}) is None  # no time: not a request event
    bad = dict(record, trace_id='a"}],"x":1')  # never spliced into the JSON text
    assert OtlpEncoder("svc", {}, {}).span(bad) is None
    no_parent = dict(record, parent_span_id=None, status=502, error_class="upstream_error")
    span = json.loads(OtlpEncoder("svc", {}, {}).traces([no_parent]))["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert "parentSpanId" not in span and span["status"] == {"code": 2, "message": "upstream_error"}


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


class _Answer:
    def __init__(self, status: int) -> None:
        self.status = status

    async def read(self) -> bytes:
        return b"{}"

    async def aclose(self) -> None:
        return None


class _Target:
    """Records the posts; answers ``status``, or raises when ``down`` (a unit-level stand-in
    for the receiver process the integration tests run)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict, bytes]] = []
        self.status, self.down = 200, False

    async def send(self, method, url, headers, body, timeout):
        if self.down:
            from flaregate.ports import UpstreamError

            raise UpstreamError("connection refused")
        self.posts.append((url, dict(headers), body))
        return _Answer(self.status)


def _exporters(**vars):
    import asyncio

    from flaregate.observability.export import build_exporters

    settings = settings_from_vars({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel", "OTEL_BSP_SCHEDULE_DELAY": "1000",
                                   "OTEL_METRICS_EXPORTER": "none", **vars})
    clock, target = _Clock(), _Target()
    exporters = build_exporters(settings, target, clock)
    assert exporters is not None
    return exporters, clock, target, asyncio.run


def _event(i: int) -> dict:
    return {"ts": 999.0, "status": 200, "trace_id": f"{i:032x}", "span_id": f"{i:016x}", "latency_ms": 5.0,
            "path": "/v1/chat/completions", "model": "m"}


def test_spans_wait_for_the_interval_and_a_final_flush_sends_at_once():
    exporters, clock, target, run = _exporters()
    exporters.offer([_event(1), _event(2)], clock.now())
    assert exporters.due_at() == 1001.0
    run(exporters.flush())
    assert target.posts == []  # not due yet
    run(exporters.flush(final=True))
    url, headers, body = target.posts[0]
    assert url == "http://otel/v1/traces" and headers["content-type"] == "application/json"
    assert len(json.loads(body)["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 2
    assert exporters.status()["otlp_traces"]["sent"] == 2 and exporters.due_at() is None


def test_a_target_that_is_down_is_retried_then_its_batch_counted_as_dropped():
    exporters, clock, target, run = _exporters(EXPORT_MAX_ATTEMPTS="2", EXPORT_RETRY_BASE_SECONDS="1")
    target.down = True
    exporters.offer([_event(1)], clock.now())
    clock.t += 1
    run(exporters.flush())
    assert exporters.status()["otlp_traces"] == {"queued": 1, "capacity": 2048, "sent": 0, "dropped": 0,
                                                  "failures": 1}
    assert exporters.due_at() == clock.t + 1
    clock.t += 1
    run(exporters.flush())
    assert exporters.status()["otlp_traces"]["dropped"] == 1 and exporters.status()["otlp_traces"]["queued"] == 0


@pytest.mark.parametrize(("path", "expected"), [
    ("/v1/chat/completions", "chat"), ("/v1/embeddings", "embeddings"), ("/mcp", "execute_tool"),
    ("/v1/audio/transcriptions", "transcription"), ("/v1/images/generations", "image_generation"),
    ("/v1/some/new/surface", "surface"), ("", "unknown"),
])
def test_each_path_is_exported_under_its_own_operation_never_a_chat_by_default(path, expected):
    assert operation({"path": path}) == expected
