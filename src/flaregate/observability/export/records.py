"""What an exporter keeps of a request's analytics event: the fields a span, a metric
point or a log line needs, projected once when the hub receives the event."""

from __future__ import annotations

from typing import Any

_FIELDS = ("request_id", "trace_id", "span_id", "parent_span_id", "ts", "latency_ms", "path", "status", "model",
           "provider", "upstream_model", "tokens_in", "tokens_out", "error_class", "cache", "stream", "key_id",
           "cost_usd", "ttft_ms")

# The GenAI semantic conventions' operation for each API path: their well-known names where
# one fits, else a name of the gateway's own (the conventions allow custom values).
OPERATIONS = {"/v1/chat/completions": "chat", "/v1/messages": "chat", "/v1/responses": "chat",
              "/v1/embeddings": "embeddings", "/v1/completions": "text_completion", "/mcp": "execute_tool",
              "/v1/moderations": "moderation", "/v1/images/generations": "image_generation",
              "/v1/audio/speech": "speech", "/v1/audio/transcriptions": "transcription",
              "/v1/realtime": "realtime"}


def export_record(event: dict[str, Any]) -> dict[str, Any] | None:
    """The exported part of a request event; None for something that is not one."""
    ts, status = event.get("ts"), event.get("status")
    if not isinstance(ts, int | float) or not isinstance(status, int) or isinstance(status, bool):
        return None
    return {name: event[name] for name in _FIELDS if event.get(name) is not None}


def operation(record: dict[str, Any]) -> str:
    """The record's operation; a path not listed is named by its last segment, never taken
    for a chat (a batch line's or any new surface's records would be miscounted)."""
    path = str(record.get("path") or "")
    return OPERATIONS.get(path) or path.rstrip("/").rsplit("/", 1)[-1] or "unknown"


def number(record: dict[str, Any], name: str) -> float:
    value = record.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"
