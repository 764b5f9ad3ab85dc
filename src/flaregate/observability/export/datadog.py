"""Datadog: metric series to ``/api/v2/series`` and, optionally, one log per request to
the logs intake, both with the ``DD-API-KEY`` header (a secret)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .records import number, operation, status_class

COUNT, GAUGE = 1, 3  # the v2 series API's metric types


def _tags(record: dict[str, Any]) -> tuple[str, ...]:
    return (f"model:{record.get('model') or 'none'}", f"provider:{record.get('provider') or 'none'}",
            f"operation:{operation(record)}", f"status_class:{status_class(int(record['status']))}")


class DatadogEncoder:
    def __init__(self, tags: tuple[str, ...], interval_seconds: float, service: str = "flaregate") -> None:
        self._tags = list(tags)
        self._interval = max(1, int(interval_seconds))
        self._service = service

    def series(self, records: Iterable[dict[str, Any]], end: float) -> bytes:
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for record in records:
            groups.setdefault(_tags(record), []).append(record)
        series: list[dict[str, Any]] = []
        timestamp = int(end)

        def add(metric: str, kind: int, value: float, tags: tuple[str, ...], unit: str | None = None) -> None:
            item: dict[str, Any] = {"metric": metric, "type": kind, "points": [{"timestamp": timestamp, "value": value}],
                                    "tags": [*self._tags, *tags]}
            if kind == COUNT:
                item["interval"] = self._interval
            if unit:
                item["unit"] = unit
            series.append(item)

        for tags, group in groups.items():
            latencies = [number(r, "latency_ms") for r in group]
            add("flaregate.requests", COUNT, len(group), tags)
            add("flaregate.errors", COUNT, sum(1 for r in group if int(r["status"]) >= 500), tags)
            add("flaregate.tokens.input", COUNT, sum(number(r, "tokens_in") for r in group), tags)
            add("flaregate.tokens.output", COUNT, sum(number(r, "tokens_out") for r in group), tags)
            add("flaregate.cost_usd", COUNT, round(sum(number(r, "cost_usd") for r in group), 9), tags)
            add("flaregate.request.duration.avg", GAUGE, round(sum(latencies) / len(latencies), 3), tags,
                "millisecond")
            add("flaregate.request.duration.max", GAUGE, round(max(latencies), 3), tags, "millisecond")
        return json.dumps({"series": series}, separators=(",", ":")).encode()

    def logs(self, records: Iterable[dict[str, Any]]) -> bytes:
        """One log per request, its fields as attributes (the request id and trace id let
        Datadog link it to the trace)."""
        items = []
        for record in records:
            status = int(record["status"])
            items.append({"ddsource": "flaregate", "service": self._service, "ddtags": ",".join(self._tags),
                          "status": "error" if status >= 500 else "warn" if status >= 400 else "info",
                          "message": f"{operation(record)} {record.get('model') or '-'} -> {status}",
                          **record})
        return json.dumps(items, separators=(",", ":"), default=str).encode()
