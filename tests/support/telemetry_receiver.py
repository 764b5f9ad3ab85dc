"""A real telemetry receiver process: OTLP/HTTP (JSON) and a Datadog-shaped API.

``POST /v1/traces`` and ``/v1/metrics`` are decoded into the ``opentelemetry-proto``
messages with ``google.protobuf.json_format`` (after turning OTLP/JSON's hex trace and span
ids into the base64 protobuf's JSON mapping expects), so anything the spec would reject
fails here with a 400. ``POST /api/v2/series`` and ``/api/v2/logs`` keep the body and the
``DD-API-KEY`` header. ``GET /received`` returns everything, decoded; ``POST /reset``
forgets it. Run as ``python -m tests.support.telemetry_receiver --port 0``: it prints
``READY <url>`` once listening.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

READY = "READY"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids_to_base64(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in _ID_FIELDS and isinstance(v, str)
                    else _hex_ids_to_base64(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_hex_ids_to_base64(v) for v in value]
    return value


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def decode_traces(body: bytes) -> list[dict[str, Any]]:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    message = json_format.Parse(json.dumps(_hex_ids_to_base64(json.loads(body))), ExportTraceServiceRequest())
    spans = []
    for resource_spans in message.resource_spans:
        resource = {a.key: _any_value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append({"trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                              "parent_span_id": span.parent_span_id.hex(), "name": span.name, "kind": span.kind,
                              "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                              "status_code": span.status.code, "resource": resource,
                              "attributes": {a.key: _any_value(a.value) for a in span.attributes}})
    return spans


def decode_metrics(body: bytes) -> list[dict[str, Any]]:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    message = json_format.Parse(body.decode(), ExportMetricsServiceRequest())
    points = []
    for resource_metrics in message.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                for point in getattr(metric, kind).data_points:
                    attrs = {a.key: _any_value(a.value) for a in point.attributes}
                    value = point.as_int if kind == "sum" else point.count
                    points.append({"name": metric.name, "kind": kind, "value": value,
                                   "sum": getattr(point, "sum", None), "attributes": attrs,
                                   "temporality": getattr(metric, kind).aggregation_temporality})
    return points


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.series: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.posts: list[dict[str, Any]] = []  # path, status, headers of every POST


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            with state.lock:
                self._answer(200, {"spans": state.spans, "metrics": state.metrics, "series": state.series,
                                   "logs": state.logs, "posts": state.posts})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, error = 200, None
            with state.lock:
                try:
                    if self.path == "/reset":
                        state.reset()
                        return self._answer(200, {})
                    if self.path == "/v1/traces":
                        state.spans.extend(decode_traces(body))
                    elif self.path == "/v1/metrics":
                        state.metrics.extend(decode_metrics(body))
                    elif self.path == "/api/v2/series":
                        state.series.extend(json.loads(body)["series"])
                    elif self.path == "/api/v2/logs":
                        state.logs.extend(json.loads(body))
                    else:
                        status, error = 404, "unknown path"
                except Exception as exc:  # a payload the spec would reject
                    status, error = 400, f"{type(exc).__name__}: {exc}"
                state.posts.append({"path": self.path, "status": status, "error": error,
                                    "headers": headers, "bytes": len(body)})
            self._answer(status, {"partialSuccess": {}} if status == 200 else {"error": error})

    return Handler


class TelemetryReceiverProcess:
    """``with TelemetryReceiverProcess() as r: r.base_url; r.received()``."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> TelemetryReceiverProcess:
        self.process = subprocess.Popen([sys.executable, "-m", "tests.support.telemetry_receiver", "--port", "0"],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(READY):
            self.close()
            raise RuntimeError(f"telemetry receiver did not start: {line!r}")
        self.base_url = line.split()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.process is not None:
            from tests.support import processes

            processes.stop(self.process)
            self.process = None

    def received(self) -> dict[str, Any]:
        import httpx

        return httpx.get(self.base_url + "/received", timeout=10).json()

    def reset(self) -> None:
        import httpx

        httpx.post(self.base_url + "/reset", timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), _handler(_State()))
    print(f"{READY} http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
