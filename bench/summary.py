"""Result maths and rendering: percentiles, medians of repeats, overhead, the markdown table.

Pure stdlib and pure functions, so ``tests/unit/test_bench_summary.py`` can check them on
canned numbers (the benchmark itself is not part of the test suite).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

# The figures one wrk (or streaming-client) run yields, all medians-of-repeats afterwards.
METRICS = ("p50_ms", "p90_ms", "p99_ms", "rps", "cpu_s_per_1k", "ttfb_p50_ms", "ttfb_p99_ms", "others_cores")


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence; None when empty."""
    if not sorted_values:
        return None
    rank = math.ceil(q / 100 * len(sorted_values))
    return sorted_values[min(len(sorted_values) - 1, max(0, rank - 1))]


def latency_summary(seconds: Iterable[float], prefix: str = "") -> dict[str, float | None]:
    """p50/p90/p99 in milliseconds of raw latency samples given in seconds."""
    ordered = sorted(seconds)
    return {f"{prefix}p{q}_ms": _ms(percentile(ordered, q)) for q in (50, 90, 99)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def cpu_per_1k(cpu_seconds: float, requests: int) -> float | None:
    return cpu_seconds / requests * 1000 if requests > 0 else None


def median_of_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each metric's median over repeated runs (missing values are left out per metric)."""
    out: dict[str, Any] = {"repeats": len(runs)}
    for name in METRICS:
        values = [r[name] for r in runs if r.get(name) is not None]
        out[name] = statistics.median(values) if values else None
    out["requests"] = sum(r.get("requests", 0) for r in runs)
    out["non_2xx"] = sum(r.get("non_2xx", 0) for r in runs)
    out["socket_errors"] = sum(r.get("socket_errors", 0) for r in runs)
    return out


def overhead(result: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    """What a target adds to its baseline: difference (ms) and ratio, per percentile."""
    out: dict[str, float | None] = {}
    for q in ("p50", "p90", "p99"):
        mine, base = result.get(f"{q}_ms"), baseline.get(f"{q}_ms")
        both = mine is not None and base is not None
        out[f"overhead_{q}_ms"] = mine - base if both else None
        out[f"ratio_{q}"] = mine / base if both and base > 0 else None
    return out


def summarise(
    runs: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]], connections: Sequence[int]
) -> list[dict[str, Any]]:
    """One row per (target, connections): medians of the repeats plus overhead vs baseline.

    ``runs`` are raw run records with ``target`` and ``connections``; ``targets`` carry
    ``id``, ``label`` and ``baseline`` (the id of the target they are compared with, or None).
    """
    medians: dict[tuple[str, int], dict[str, Any]] = {}
    for target in targets:
        for conns in connections:
            mine = [r for r in runs if r["target"] == target["id"] and r["connections"] == conns]
            if mine:
                medians[(target["id"], conns)] = median_of_runs(mine)
    rows = []
    for target in targets:
        for conns in connections:
            row = medians.get((target["id"], conns))
            if row is None:
                continue
            row = {"target": target["id"], "label": target["label"], "connections": conns, **row}
            base = medians.get((target.get("baseline"), conns))
            row.update(overhead(row, base) if base else overhead({}, {}))
            rows.append(row)
    return rows


# -- rendering ---------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def render_table(rows: Sequence[dict[str, Any]], rss_mb: dict[str, float] | None = None,
                 servers: dict[str, str] | None = None) -> str:
    """The markdown results table (one line per target and connection count)."""
    rss_mb = rss_mb or {}
    servers = servers or {}
    head = (
        "| target | conns | p50 ms | p90 ms | p99 ms | req/s | overhead p50 / p99 ms "
        "| ratio p50 | TTFB p50 / p99 ms | CPU s / 1k req | peak RSS MB |"
    )
    lines = [head, _rule(head)]
    for r in rows:
        over = (
            f"{fmt(r.get('overhead_p50_ms'))} / {fmt(r.get('overhead_p99_ms'))}"
            if r.get("overhead_p50_ms") is not None else "baseline"
        )
        ttfb = (
            f"{fmt(r.get('ttfb_p50_ms'))} / {fmt(r.get('ttfb_p99_ms'))}"
            if r.get("ttfb_p50_ms") is not None else ""
        )
        ratio = fmt(r.get("ratio_p50"), 1) + "×" if r.get("ratio_p50") is not None else ""
        server = servers.get(r["target"])
        rss = fmt(rss_mb.get(server), 0) if server in rss_mb else ""
        lines.append(
            f"| {r['label']} | {r['connections']} | {fmt(r.get('p50_ms'))} | {fmt(r.get('p90_ms'))}"
            f" | {fmt(r.get('p99_ms'))} | {fmt(r.get('rps'), 0)} | {over} | {ratio} | {ttfb}"
            f" | {fmt(r.get('cpu_s_per_1k'))} | {rss} |"
        )
    return "\n".join(lines) + "\n"


def _rule(head: str) -> str:
    return "|" + "---|" * (head.count("|") - 1)


def find(rows: Sequence[dict[str, Any]], target: str, conns: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["target"] == target and r["connections"] == conns), None)


def target_checks(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets for Flaregate, each with the measured figure and met or missed."""
    miss1, hit1 = find(rows, "fg-miss", 1), find(rows, "fg-hit", 1)
    miss16 = find(rows, "fg-miss", 16)
    portkey16 = find(rows, "portkey-miss", 16)
    fg_cpu = miss16.get("cpu_s_per_1k") if miss16 else None
    pk_cpu = portkey16.get("cpu_s_per_1k") if portkey16 else None
    checks = [
        ("cache-miss overhead p50, 1 connection", "< 1 ms", miss1 and miss1.get("overhead_p50_ms"), "lt", 1.0),
        ("cache-miss overhead p99, 1 connection", "< 3 ms", miss1 and miss1.get("overhead_p99_ms"), "lt", 3.0),
        ("cache-hit p99, 1 connection", "< 2 ms", hit1 and hit1.get("p99_ms"), "lt", 2.0),
        ("cache-miss req/s, 16 connections", ">= 3000", miss16 and miss16.get("rps"), "ge", 3000.0),
        ("CPU per request vs Portkey (cache miss, 16 conns)", "<= 1/3",
         fg_cpu / pk_cpu if fg_cpu is not None and pk_cpu else None, "le", 1 / 3),
    ]
    compare = {"lt": lambda v, lim: v < lim, "le": lambda v, lim: v <= lim, "ge": lambda v, lim: v >= lim}
    return [
        {"target": name, "goal": goal, "measured": value,
         "met": None if value is None else compare[kind](value, limit)}
        for name, goal, value, kind, limit in checks
    ]


def render_checks(checks: Sequence[dict[str, Any]]) -> str:
    lines = ["| Flaregate target | goal | measured | |", "|---|---|---|---|"]
    for c in checks:
        verdict = {True: "met", False: "missed", None: "not measured"}[c["met"]]
        value = c["measured"]
        shown = fmt(value, 3) if value is not None and abs(value) < 1 else fmt(value)
        lines.append(f"| {c['target']} | {c['goal']} | {shown} | {verdict} |")
    return "\n".join(lines) + "\n"
