"""OpenTelemetry over OTLP/HTTP with the JSON encoding (pure Python: no protobuf in the
Worker). One span per API request with the GenAI semantic conventions' attributes,
parented on the caller's ``traceparent``; metrics as delta sums and histograms.

The OTLP/JSON rules that differ from protobuf's canonical JSON: trace and span ids are
hex strings, enums are integers, 64-bit integers are strings.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from typing import Any

from ... import __version__
from .records import number, operation

SPAN_KIND_SERVER = 2
STATUS_ERROR = 2
DELTA = 1  # AGGREGATION_TEMPORALITY_DELTA
# The GenAI conventions' advised bucket boundaries (seconds, tokens).
DURATION_BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BOUNDS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
# Provider kinds whose GenAI ``gen_ai.provider.name`` differs from the kind's own name.
_PROVIDER_NAMES = {"workers_ai": "cloudflare.workers_ai", "huggingface": "hugging_face"}
_TRACE_ID, _SPAN_ID = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{16}$")


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def attributes(pairs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _value(value)} for key, value in pairs.items() if value is not None]


def _nanos(seconds: float) -> str:
    return str(int(seconds * 1e9))


class OtlpEncoder:
    """Builds the JSON bodies; ``kinds`` maps a configured provider name to its kind."""

    def __init__(self, service_name: str, resource_attributes: dict[str, str], kinds: dict[str, str]) -> None:
        self._resource = {"attributes": attributes({"service.name": service_name, "service.version": __version__,
                                                    **resource_attributes})}
        self._scope = {"name": "flaregate", "version": __version__}
        self._kinds = kinds
        # The shared attributes' JSON per (provider, model, path): few distinct values, and
        # building them was most of a span's encoding time.
        self._genai_json = functools.lru_cache(maxsize=1024)(self._genai_fragment)

    def genai(self, record: dict[str, Any]) -> dict[str, Any]:
        """The GenAI attributes every signal shares (low cardinality: no ids)."""
        provider = record.get("provider")
        kind = self._kinds.get(str(provider), str(provider)) if provider else None
        name = _PROVIDER_NAMES.get(kind, kind) if kind else None
        return {"gen_ai.operation.name": operation(record), "gen_ai.provider.name": name,
                "gen_ai.system": name,  # the name older conventions (and backends) read
                "gen_ai.request.model": record.get("model")}

    def _genai_fragment(self, provider: Any, model: Any, path: Any) -> str:
        pairs = self.genai({"provider": provider, "model": model, "path": path})
        return json.dumps(attributes(pairs), separators=(",", ":"))[1:-1]

    # -- traces ------------------------------------------------------------------------
    def span(self, record: dict[str, Any]) -> str | None:
        """One span as OTLP/JSON text (None without well-formed ids)."""
        trace_id, span_id, parent = record.get("trace_id"), record.get("span_id"), record.get("parent_span_id")
        if not (isinstance(trace_id, str) and _TRACE_ID.match(trace_id) and isinstance(span_id, str)
                and _SPAN_ID.match(span_id)):
            return None
        status = int(record["status"])
        start = float(record["ts"])
        pairs: dict[str, Any] = {
            "gen_ai.response.model": record.get("upstream_model") or None,
            "gen_ai.usage.input_tokens": record.get("tokens_in"),
            "gen_ai.usage.output_tokens": record.get("tokens_out"),
            "http.request.method": "POST",
            "http.route": record.get("path"),
            "http.response.status_code": status,
            "error.type": (record.get("error_class") or str(status)) if status >= 400 else None,
            "flaregate.request_id": record.get("request_id"),
            "flaregate.provider": record.get("provider"),
            "flaregate.cache": record.get("cache"),
            "flaregate.stream": bool(record.get("stream")),
        }
        shared = self._genai_json(record.get("provider"), record.get("model"), record.get("path"))
        own = json.dumps(attributes(pairs), separators=(",", ":"))[1:-1]
        status_json = (json.dumps({"code": STATUS_ERROR, "message": str(record.get("error_class") or status)})
                       if status >= 500 else "{}")
        name = json.dumps(f"{operation(record)} {record.get('model') or ''}".strip())
        parent_json = f'"parentSpanId":"{parent}",' if isinstance(parent, str) and _SPAN_ID.match(parent) else ""
        return (f'{{"traceId":"{trace_id}","spanId":"{span_id}",{parent_json}"name":{name},'
                f'"kind":{SPAN_KIND_SERVER},"startTimeUnixNano":"{_nanos(start)}",'
                f'"endTimeUnixNano":"{_nanos(start + number(record, "latency_ms") / 1000)}",'
                f'"attributes":[{shared}{"," if shared and own else ""}{own}],"status":{status_json}}}')

    def traces(self, records: Iterable[dict[str, Any]]) -> bytes:
        spans = ",".join(s for s in (self.span(r) for r in records) if s is not None)
        resource = json.dumps(self._resource, separators=(",", ":"))
        scope = json.dumps(self._scope, separators=(",", ":"))
        return (f'{{"resourceSpans":[{{"resource":{resource},"scopeSpans":[{{"scope":{scope},'
                f'"spans":[{spans}]}}]}}]}}').encode()

    # -- metrics -----------------------------------------------------------------------
    def metrics(self, records: Iterable[dict[str, Any]], start: float, end: float) -> bytes:
        """Delta points for [start, end): request counts, request duration, token usage."""
        counts: dict[tuple[tuple[str, Any], ...], int] = {}
        durations: dict[tuple[tuple[str, Any], ...], list[float]] = {}
        tokens: dict[tuple[tuple[str, Any], ...], list[float]] = {}
        for record in records:
            base = self.genai(record)
            status = int(record["status"])
            error = (record.get("error_class") or str(status)) if status >= 400 else None
            key = tuple({**base, "http.response.status_code": status, "error.type": error}.items())
            counts[key] = counts.get(key, 0) + 1
            durations.setdefault(tuple({**base, "error.type": error}.items()), []).append(
                number(record, "latency_ms") / 1000)
            for kind, field in (("input", "tokens_in"), ("output", "tokens_out")):
                if isinstance(record.get(field), int):
                    tokens.setdefault(tuple({**base, "gen_ai.token.type": kind}.items()), []).append(
                        float(record[field]))
        window = {"startTimeUnixNano": _nanos(start), "timeUnixNano": _nanos(end)}
        metrics = [
            {"name": "flaregate.requests", "unit": "{request}", "description": "API requests handled.",
             "sum": {"aggregationTemporality": DELTA, "isMonotonic": True, "dataPoints": [
                 {"attributes": attributes(dict(key)), **window, "asInt": str(n)} for key, n in counts.items()]}},
            {"name": "gen_ai.server.request.duration", "unit": "s", "description": "Time from request to response end.",
             "histogram": {"aggregationTemporality": DELTA, "dataPoints": [
                 _histogram(dict(key), values, DURATION_BOUNDS, window) for key, values in durations.items()]}},
            {"name": "gen_ai.client.token.usage", "unit": "{token}", "description": "Tokens per request.",
             "histogram": {"aggregationTemporality": DELTA, "dataPoints": [
                 _histogram(dict(key), values, TOKEN_BOUNDS, window) for key, values in tokens.items()]}},
        ]
        return json.dumps({"resourceMetrics": [{"resource": self._resource, "scopeMetrics": [
            {"scope": self._scope, "metrics": [m for m in metrics if _points(m)]}]}]}, separators=(",", ":")).encode()


def _points(metric: dict[str, Any]) -> list[Any]:
    return metric.get("sum", metric.get("histogram", {}))["dataPoints"]


def _histogram(pairs: dict[str, Any], values: list[float], bounds: tuple[float, ...],
               window: dict[str, str]) -> dict[str, Any]:
    buckets = [0] * (len(bounds) + 1)
    for value in values:
        buckets[next((i for i, bound in enumerate(bounds) if value <= bound), len(bounds))] += 1
    return {"attributes": attributes(pairs), **window, "count": str(len(values)), "sum": sum(values),
            "bucketCounts": [str(n) for n in buckets], "explicitBounds": list(bounds),
            "min": min(values), "max": max(values)}
