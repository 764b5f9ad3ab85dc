"""The exporters' queue (batches, backoff, bounded drops), settings and encodings."""

from __future__ import annotations

import json

import pytest

from flaregate.config import ConfigError, settings_from_vars
from flaregate.observability.export.otlp import OtlpEncoder
from flaregate.observability.export.queue import ExportQueue
from flaregate.observability.export.records import export_record
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
