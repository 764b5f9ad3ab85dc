"""What an exporter keeps of a request's analytics event: the fields a span, a metric
point or a log line needs, projected once when the hub receives the event."""

from __future__ import annotations

from typing import Any

_FIELDS = ("request_id", "trace_id", "span_id", "parent_span_id", "ts", "latency_ms", "path", "status", "model",
           "provider", "upstream_model", "tokens_in", "tokens_out", "error_class", "cache", "stream", "key_id",
           "cost_usd", "ttft_ms")

# The GenAI semantic conventions' operation for each API path.
OPERATIONS = {"/v1/chat/completions": "chat", "/v1/messages": "chat", "/v1/responses": "chat",
              "/v1/embeddings": "embeddings", "/v1/completions": "text_completion"}


def export_record(event: dict[str, Any]) -> dict[str, Any] | None:
    """The exported part of a request event; None for something that is not one."""
    ts, status = event.get("ts"), event.get("status")
    if not isinstance(ts, int | float) or not isinstance(status, int) or isinstance(status, bool):
        return None
    return {name: event[name] for name in _FIELDS if event.get(name) is not None}


def operation(record: dict[str, Any]) -> str:
    return OPERATIONS.get(str(record.get("path") or ""), "chat")


def number(record: dict[str, Any], name: str) -> float:
    value = record.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"
