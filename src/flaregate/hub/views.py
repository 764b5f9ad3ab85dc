"""The hub's answers made from mergeable parts, so one hub and N hub shards answer alike.

A hub (:class:`~.hub.MetricsHub`) gives the raw material of each read as *parts*: counter
sums, histogram bucket counts, error counts, time-series buckets, tag sums (all additive),
recent samples and events (lists, concatenated), and a few scalars with their own rule
(``ts``: the latest; ``started_at``: the earliest). :func:`merge` adds any number of parts
together; the ``render_*`` functions turn parts into the answer clients see. A single hub
renders its own parts; the sharded client (``shards.py``) merges its shards' parts
first, through this same code, so counts, sums and costs of N shards equal one hub's on the
same events (integers exactly, float sums up to the order of addition), and percentiles
come from the merged histograms, the same buckets one hub would hold.

Prometheus text merges as text (:func:`merge_prometheus`): every series adds up across
shards except the health gauges (recomputed from merged parts) and process memory (the
largest shard's).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from ..observability.prometheus import Exposition, _value
from .health_score import health_score
from .histogram import INF_INDEX, METRICS, percentile, quantile
from .store import COUNTERS, INT_COUNTERS
from .time_budget import where_the_time_goes

WINDOWS = {"1h": (3600, 60), "24h": (86400, 3600), "30d": (30 * 86400, 86400),
           "1y": (365 * 86400, 7 * 86400)}  # the archive: daily rows kept a year, weekly series
# The analytics dimensions (``by_<name>``) and their hub_rollup columns; a new group (team,
# tag) is one more entry here, merged like the others.
DIMENSIONS = (("provider", "provider"), ("model", "model"), ("key", "key_id"))
DROPPED_EVENT = "analytics_dropped"  # the operational item a sharded client counts its drops in
SAMPLES_KEPT = 1000
RECENT_EVENTS = 20
LIVE_WINDOW_SECONDS = 60
_TOTAL_KEYS = ("requests", "errors", "cache_hits", "cache_misses", "rate_limited", "tokens_in", "tokens_out")
_LATEST = frozenset({"ts"})
_EARLIEST = frozenset({"started_at"})
_FIRST = frozenset({"start", "sample_info_per_second", "process", "exporters", "shard"})


def merge(parts: Iterable[Any], key: str | None = None) -> Any:
    """Add parts together: dicts key by key, numbers summed, lists concatenated; ``ts`` the
    latest, ``started_at`` the earliest, and a few descriptive values the first one seen."""
    items = [p for p in parts if p is not None]
    if not items:
        return None
    if key in _LATEST or key in _EARLIEST:
        numbers = [p for p in items if isinstance(p, int | float)]
        return (max if key in _LATEST else min)(numbers) if numbers else items[0]
    if key in _FIRST:
        return items[0]
    first = items[0]
    if isinstance(first, dict):
        out: dict[str, Any] = {}
        for item in items:
            if isinstance(item, dict):
                for name in item:
                    if name not in out:
                        out[name] = merge((i.get(name) for i in items if isinstance(i, dict)), name)
        return out
    if isinstance(first, list):
        return [x for item in items if isinstance(item, list) for x in item]
    if isinstance(first, bool) or not isinstance(first, int | float):
        return first
    return sum(item for item in items if isinstance(item, int | float) and not isinstance(item, bool))


def _rate(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def numbers(row: dict[str, Any]) -> dict[str, Any]:
    return {c: (int(row.get(c) or 0) if c in INT_COUNTERS else round(float(row.get(c) or 0), 6)) for c in COUNTERS}


def raw(row: dict[str, Any]) -> dict[str, float]:
    return {c: row.get(c) or 0 for c in COUNTERS}


def _buckets(hist: dict[str, Any]) -> dict[int, int]:
    return {min(int(le), INF_INDEX): int(n) for le, n in hist.items()}


# -- health ------------------------------------------------------------------------------
def render_health(parts: dict[str, Any], latency_target_ms: float) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    rows: dict[str, dict[str, float]] = parts.get("rows") or {}
    samples: list[list[Any]] = parts.get("samples") or []

    def p95(provider: str | None) -> float | None:
        return percentile(sorted(ms for name, ms in samples if provider is None or name == provider), 0.95)

    def score(selected: list[dict[str, float]], provider: str | None) -> dict[str, Any]:
        total = {c: sum(r.get(c, 0) for r in selected) for c in ("requests", "failures", "attempts", "attempt_failures")}
        return health_score(int(total["requests"]), int(total["failures"]), p95(provider), latency_target_ms,
                            int(total["attempts"]), int(total["attempt_failures"]))

    overall = score(list(rows.values()), None)
    per_provider = {}
    for name in sorted(rows):
        if name == "-":
            continue
        detail = score([rows[name]], name)
        per_provider[name] = {"health": detail["score"], "status": detail["status"],
                              "availability": detail["availability"],
                              "failure_rate": detail["failure_rate"], "p95_ms": detail["p95_ms"]}
    return overall, per_provider


# -- analytics ---------------------------------------------------------------------------
def _summary(row: dict[str, Any], histograms: dict[str, Any], errors: dict[str, int], span: float) -> dict[str, Any]:
    n = numbers(row)
    sums = {"total": n["latency_sum_ms"], "upstream": n["upstream_sum_ms"],
            "overhead": n["overhead_sum_ms"], "ttft": n["ttft_sum_ms"]}
    latency = {}
    for metric in METRICS:
        counts = _buckets(histograms.get(metric) or {})
        count = sum(counts.values())
        latency[metric] = {"count": count, "avg": round(sums[metric] / count, 3) if count else None,
                           "p50": quantile(counts, 0.50), "p95": quantile(counts, 0.95),
                           "p99": quantile(counts, 0.99)}
    return {
        **{c: n[c] for c in ("requests", "errors", "failures", "cache_hits", "cache_misses", "rate_limited",
                             "streams", "failovers", "attempts", "attempt_failures", "tokens_in",
                             "tokens_out", "cost_usd", "cache_bytes_saved", "cache_tokens_saved")},
        "rps": round(n["requests"] / span, 4),
        "error_rate": _rate(n["errors"], n["requests"]),
        "failure_rate": _rate(n["failures"], n["requests"]),
        "cache_hit_rate": _rate(n["cache_hits"], n["cache_hits"] + n["cache_misses"]),
        "availability": _rate(n["attempts"] - n["attempt_failures"], n["attempts"]),
        "latency_ms": latency,
        "errors_by_class": {k: int(v) for k, v in sorted((errors or {}).items())},
    }


def _window(name: str, parts: dict[str, Any], now: float) -> dict[str, Any]:
    span, step = WINDOWS[name]
    summary = _summary(parts.get("total") or {}, parts.get("hist") or {}, parts.get("errors") or {}, span)
    groups = parts.get("groups") or {}
    for dimension, _ in DIMENSIONS:
        summary[f"by_{dimension}"] = {
            value: _summary(group.get("total") or {}, group.get("hist") or {}, group.get("errors") or {}, span)
            for value, group in sorted((groups.get(dimension) or {}).items())
        }
    summary["by_tag"] = {tag: {value: {c: round(float(v), 6) for c, v in counters.items()}
                               for value, counters in sorted(values.items())}
                         for tag, values in sorted((parts.get("tags") or {}).items())}
    dimensions = dict(parts.get("dimensions") or {})  # spend reports: teams, REPORT_TAGS
    spend = {name: {value: {c: round(float(v), 9) if c == "cost_usd" else int(v) for c, v in counters.items()}
                    for value, counters in sorted(values.items())}
             for name, values in sorted(dimensions.items())}
    summary["by_team"] = spend.pop("team", {})
    summary["by_report_tag"] = {name[4:]: values for name, values in spend.items() if name.startswith("tag:")}
    summary["series"] = [
        {"t": int(t), "requests": int(row["requests"]), "errors": int(row["errors"]),
         "failures": int(row["failures"]), "cache_hits": int(row["cache_hits"]),
         "cache_misses": int(row["cache_misses"]), "rate_limited": int(row["rate_limited"]),
         "avg_ms": round(row["latency_sum_ms"] / row["requests"], 3) if row["requests"] else None,
         "tokens_in": int(row["tokens_in"]), "tokens_out": int(row["tokens_out"]),
         "cost_usd": round(row["cost_usd"], 6)}
        for t, row in sorted((parts.get("series") or {}).items(), key=lambda item: int(item[0]))
    ]
    return {"window": name, "start": parts.get("start"), "end": round(now, 3), "resolution_s": step, **summary}


def _recent(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(samples, key=lambda s: s.get("ts") or 0)[-SAMPLES_KEPT:]


def _recent_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: e.get("ts") or 0, reverse=True)[:RECENT_EVENTS]


def render_analytics(parts: dict[str, Any], latency_target_ms: float) -> dict[str, Any]:
    now = float(parts.get("ts") or 0)
    health, provider_health = render_health(parts.get("health") or {}, latency_target_ms)
    return {
        "ts": round(now, 3),
        "windows": {name: _window(name, window, now) for name, window in (parts.get("windows") or {}).items()
                    if name in WINDOWS},
        "where_the_time_goes": where_the_time_goes(_recent(parts.get("samples") or [])),
        "health": {**health, "providers": provider_health},
        "recent_events": _recent_events(parts.get("recent_events") or []),
    }


# -- the live snapshot -------------------------------------------------------------------
def _latency(samples: list[dict[str, Any]], column: str, with_avg: bool = False) -> dict[str, Any]:
    values = sorted(s[column] for s in samples if s.get(column) is not None)
    block: dict[str, Any] = {}
    if with_avg:
        block["avg"] = round(sum(values) / len(values), 3) if values else None
    block.update({"p50": percentile(values, 0.50), "p95": percentile(values, 0.95),
                  "p99": percentile(values, 0.99), "max": round(values[-1], 3) if values else None,
                  "samples": len(values)})
    return block


def render_snapshot(parts: dict[str, Any], latency_target_ms: float) -> dict[str, Any]:
    now = float(parts.get("ts") or 0)
    sums = parts.get("sums") or {}
    life = numbers(sums.get("life") or {})
    live = {k: int(v) for k, v in (sums.get("live") or {}).items()}
    recent = {k: int(v) for k, v in (sums.get("recent") or {}).items()}
    samples = _recent(parts.get("samples") or [])
    health, provider_health = render_health(parts.get("health") or {}, latency_target_ms)
    providers = {}
    for name, row in sorted((sums.get("providers") or {}).items()):
        if name == "-":
            continue
        providers[name] = {"requests": int(row["requests"]), "errors": int(row["errors"]),
                           **provider_health.get(name, {"health": 100, "status": "healthy"})}
    lookups = life["cache_hits"] + life["cache_misses"]
    requests_live = live.get("requests", 0)
    snapshot: dict[str, Any] = {
        "ts": round(now, 3),
        "uptime_s": round(now - float(parts.get("started_at") or now), 3),
        "totals": {**{name: life[name] for name in _TOTAL_KEYS}, "failures": life["failures"],
                   "streams": life["streams"], "failovers": life["failovers"], "cost_usd": life["cost_usd"],
                   "cache_bytes_saved": life["cache_bytes_saved"],
                   "cache_tokens_saved": life["cache_tokens_saved"],
                   "kv_writes_avoided": life["kv_writes_avoided"], "shed": life["shed"]},
        "operational_events": {k: int(v) for k, v in sorted((sums.get("event_counts") or {}).items())},
        "error_rate": round(life["errors"] / life["requests"], 4) if life["requests"] else 0.0,
        "cache_hit_rate": round(life["cache_hits"] / lookups, 4) if lookups else None,
        "rps_1m": round(requests_live / LIVE_WINDOW_SECONDS, 3),
        "rps_10s": round(recent.get("requests", 0) / 10, 3),
        "live": {
            "window_s": LIVE_WINDOW_SECONDS, **live,
            "error_rate": _rate(live.get("errors", 0), requests_live),
            "failure_rate": _rate(live.get("failures", 0), requests_live),
            "cache_hit_rate": _rate(live.get("cache_hits", 0), live.get("cache_hits", 0) + live.get("cache_misses", 0)),
        },
        "latency_ms": _latency(samples, "total_ms", with_avg=True),
        "upstream_ms": _latency(samples, "upstream_ms"),
        "overhead_ms": _latency(samples, "overhead_ms"),
        "ttft_ms": _latency(samples, "ttft_ms"),
        "errors_by_class": {k: int(v) for k, v in sorted((sums.get("errors") or {}).items())},
        "providers": providers,
        "health": health,
        "subscribers": int(sums.get("subscribers") or 0),
    }
    if parts.get("process"):
        snapshot["process"] = parts["process"]
    if parts.get("shards"):
        snapshot["shards"] = parts["shards"]
    return snapshot


def render_health_summary(parts: dict[str, Any], latency_target_ms: float) -> dict[str, Any]:
    summary: dict[str, Any] = {"health": render_health(parts.get("health") or {}, latency_target_ms)[0]}
    for name in ("request_logs", "exporters", "process", "shards", "analytics_dropped"):
        if parts.get(name):
            summary[name] = parts[name]
    return summary


# -- Prometheus text ---------------------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")
_LARGEST = frozenset({"flaregate_process_resident_memory_bytes", "flaregate_isolate_wasm_memory_bytes"})


def _number(text: str) -> float:
    return math.inf if text == "+Inf" else -math.inf if text == "-Inf" else float(text)


def merge_prometheus(texts: list[str], health: dict[str, Any], latency_target_ms: float) -> str:
    """Several hubs' exposition text as one: same series added up (counters, histogram
    buckets, sums and counts, gauges of stored bytes), the health gauges recomputed from the
    merged health parts, process memory the largest."""
    families: dict[str, list[str]] = {}  # name -> HELP and TYPE lines, in first-seen order
    series: dict[str, dict[str, float]] = {}  # family -> {name+labels: value}
    current = ""
    for text in texts:
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                current = line.split(" ", 3)[2]
                header = families.setdefault(current, [])
                if len(header) < 2 and line not in header:
                    header.append(line)
                series.setdefault(current, {})
                continue
            match = _SAMPLE.match(line)
            if not match or not current:
                continue
            key = match.group(1) + (match.group(2) or "")
            value = _number(match.group(3))
            held = series[current].get(key)
            if held is None:
                series[current][key] = value
            elif current in _LARGEST:
                series[current][key] = max(held, value)
            else:
                series[current][key] = held + value
    overall, per_provider = render_health(health, latency_target_ms)
    if "flaregate_health_score" in series:
        series["flaregate_health_score"] = {"flaregate_health_score": overall["score"]}
    if "flaregate_provider_health_score" in series:
        fresh = Exposition()
        for provider, detail in sorted(per_provider.items()):
            fresh.sample("flaregate_provider_health_score", {"provider": provider}, detail["health"])
        series["flaregate_provider_health_score"] = {
            m.group(1) + (m.group(2) or ""): _number(m.group(3))
            for m in (_SAMPLE.match(line) for line in fresh.text().splitlines()) if m}
    lines: list[str] = []
    for name, header in families.items():
        lines += header
        lines += [f"{key} {_value(value)}" for key, value in series[name].items()]
    return "\n".join(lines) + "\n"


def parse_prometheus(text: str) -> dict[str, float]:
    """{name+labels: value} of an exposition text (for comparisons)."""
    return {m.group(1) + (m.group(2) or ""): _number(m.group(3))
            for m in (_SAMPLE.match(line) for line in text.splitlines() if not line.startswith("#")) if m}
