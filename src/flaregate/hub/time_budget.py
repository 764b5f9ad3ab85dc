"""'Where the time goes': which profiler phase dominates the slow tail, in plain words.

From recent request samples (total time and per-phase times) it takes the slowest 5 % of
requests (the ones that make the 95th percentile), averages each phase over them and names the
phase with the largest share, with a recommendation an operator can act on.
"""

from __future__ import annotations

import math
from typing import Any, TypedDict

from .histogram import percentile

TAIL_SHARE = 0.05  # the slowest 5 % of requests: what p95 is made of

# Phases that do not overlap; ``upstream_ttfb`` is part of ``upstream`` and is reported
# but never competes. ``other`` is the time inside no phase (queueing, scheduling).
LEAF_PHASES = ("parse", "auth", "ratelimit", "route", "cache", "upstream", "format", "cache_store")
SUB_PHASES = ("upstream_ttfb",)

RECOMMENDATIONS = {
    "upstream": (
        "The providers' own response time dominates the slowest requests. Gateway tuning "
        "cannot fix that: cache repeated prompts (CACHE_TTL_SECONDS), route this traffic to a "
        "faster provider or model first, or stream so clients see the first token sooner."
    ),
    "ratelimit": (
        "The rate-limit check dominates: each request waits for the limiter object. A limiter "
        "Durable Object far from this location or one hot key contends; spread hot traffic "
        "over more keys or raise RATE_LIMIT_CAPACITY for bursts."
    ),
    "cache": (
        "Cache lookups dominate: the cache store is slow to answer. On the edge a KV miss is "
        "slower than a hit; if this traffic never repeats, set CACHE_TTL_SECONDS=0 to skip it."
    ),
    "cache_store": (
        "Storing responses in the cache dominates: responses are large. Disable caching for "
        "this traffic (CACHE_TTL_SECONDS=0) if it rarely repeats."
    ),
    "parse": (
        "Parsing and validating request bodies dominates: requests are large (long "
        "conversations). Trim history on the client or lower MAX_BODY_BYTES."
    ),
    "auth": (
        "Checking gateway keys dominates, which is unusual: check FLAREGATE_API_KEYS for a "
        "very long list of keys."
    ),
    "route": (
        "Resolving routes dominates, which is unusual: check FLAREGATE_ROUTES for a very "
        "large table."
    ),
    "format": (
        "Reading and checking upstream responses dominates: responses are large. Ask for "
        "fewer tokens (max_tokens) or stream them."
    ),
    "other": (
        "Time outside every measured phase dominates: requests wait for the CPU (a busy "
        "event loop). Add instances or workers, or reduce load per instance."
    ),
}


class PhaseRow(TypedDict):
    phase: str
    p50_ms: float | None
    p95_ms: float | None
    tail_avg_ms: float
    tail_share: float


class TimeBudget(TypedDict):
    """The analytics view's "where the time goes" block (docs/observability.md)."""

    samples: int
    p95_ms: float | None
    tail: int
    phases: list[PhaseRow]
    dominant: str | None
    dominant_share: float | None
    recommendation: str


def where_the_time_goes(samples: list[dict[str, Any]]) -> TimeBudget:
    """samples: [{"total_ms": float, "phases": {name: ms}}], most recent first or any order."""
    usable = [s for s in samples if isinstance(s.get("total_ms"), int | float)]
    if not usable:
        return {"samples": 0, "p95_ms": None, "tail": 0, "phases": [], "dominant": None,
                "dominant_share": None, "recommendation": "No requests measured yet."}
    totals = sorted(s["total_ms"] for s in usable)
    p95 = percentile(totals, 0.95)
    slowest_first = sorted(usable, key=lambda s: s["total_ms"], reverse=True)
    tail = slowest_first[:max(1, math.ceil(len(usable) * TAIL_SHARE))]
    names = [*LEAF_PHASES, *SUB_PHASES, "other"]

    def phase_ms(sample: dict[str, Any], name: str) -> float:
        phases = sample.get("phases") or {}
        if name == "other":
            inside = sum(float(phases.get(leaf, 0.0)) for leaf in LEAF_PHASES)
            return max(0.0, float(sample["total_ms"]) - inside)
        return float(phases.get(name, 0.0))

    tail_total = sum(s["total_ms"] for s in tail) or 1.0
    rows: list[PhaseRow] = []
    for name in names:
        values = sorted(phase_ms(s, name) for s in usable)
        if not any(values):
            continue
        tail_sum = sum(phase_ms(s, name) for s in tail)
        rows.append({
            "phase": name,
            "p50_ms": percentile(values, 0.50),
            "p95_ms": percentile(values, 0.95),
            "tail_avg_ms": round(tail_sum / len(tail), 3),
            "tail_share": round(tail_sum / tail_total, 4),
        })
    competing = [r for r in rows if r["phase"] not in SUB_PHASES]
    dominant = max(competing, key=lambda r: r["tail_share"]) if competing else None
    rows.sort(key=lambda r: r["tail_share"], reverse=True)
    return {
        "samples": len(usable),
        "p95_ms": p95,
        "tail": len(tail),
        "phases": rows,
        "dominant": dominant["phase"] if dominant else None,
        "dominant_share": dominant["tail_share"] if dominant else None,
        "recommendation": RECOMMENDATIONS[dominant["phase"]] if dominant else "No phase measured yet.",
    }
