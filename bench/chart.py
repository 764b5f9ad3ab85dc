"""The PNG: latency distribution per target (top) and overhead over the baseline (bottom)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"direct": "#555555", "direct-stream": "#999999", "fg-miss": "#f38020", "fg-hit": "#2a9d8f",
           "fg-429": "#8e44ad", "fg-stream": "#e9c46a", "litellm-miss": "#1f77b4", "litellm-stream": "#7fb3e0",
           "portkey-miss": "#d62728", "portkey-stream": "#f08a8b", "cmp-miss": "#b35806", "cmp-hit": "#1b7837",
           "cmp-429": "#542788", "cmp-stream": "#a6761d"}


def _median_curve(runs: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Point-wise median over the repeats' percentile curves."""
    curves = [r["curve"] for r in runs if r.get("curve")]
    if not curves:
        return []
    points = []
    for i, (q, _) in enumerate(curves[0]):
        values = sorted(c[i][1] for c in curves if len(c) > i)
        points.append((q, values[len(values) // 2]))
    return points


def render_chart(report: dict[str, Any], path: Path) -> None:
    connections = report["settings"]["connections"]
    targets = report["targets"]
    fig, axes = plt.subplots(2, len(connections), figsize=(7 * len(connections) + 3, 10), squeeze=False)
    for col, conns in enumerate(connections):
        ax = axes[0][col]
        for t in targets:
            curve = _median_curve([r for r in report["runs"] if r["target"] == t["id"] and r["connections"] == conns])
            if not curve:
                continue
            # x: the "nines" of the percentile, so the tail gets room (HdrHistogram style).
            xs = [1 / (1 - q / 100) for q, _ in curve]
            ax.plot(xs, [ms for _, ms in curve], marker=".", label=t["label"], color=COLOURS.get(t["id"]),
                    linestyle="--" if t["kind"] == "stream" else "-")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [0, 50, 90, 99, 99.9]
        ax.set_xticks([1 / (1 - q / 100) for q in ticks], [f"p{q:g}" for q in ticks])
        ax.set_ylabel("latency, ms (log)")
        ax.set_title(f"Latency distribution, {conns} connection{'s' if conns > 1 else ''} (streams: to [DONE])")
        ax.grid(True, which="both", alpha=0.3)
        if col == len(connections) - 1:  # one legend, beside the last chart
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))

        ax = axes[1][col]
        rows = [r for r in report["results"] if r["connections"] == conns and r.get("overhead_p50_ms") is not None]
        labels = [r["label"] for r in rows]
        y = range(len(rows))
        floor = 0.01  # a log axis: an overhead at or under the baseline's (noise) shows as this
        p50 = [max(r["overhead_p50_ms"], floor) for r in rows]
        p99 = [max(r["overhead_p99_ms"], floor) for r in rows]
        ax.barh([i + 0.2 for i in y], p50, height=0.4, label="p50 overhead", color="#f38020")
        ax.barh([i - 0.2 for i in y], p99, height=0.4, label="p99 overhead", color="#6c3483")
        for i, r in enumerate(rows):
            rps = r.get("rps")
            ax.text(max(p50[i], p99[i]) * 1.1, i, f"{r['overhead_p50_ms']:.2f} / {r['overhead_p99_ms']:.2f} ms"
                    + (f", {rps:,.0f} req/s" if rps else ""), va="center", fontsize=8)
        ax.set_yticks(list(y), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("added latency over direct-to-mock, ms (log)")
        ax.set_title(f"Overhead per target, {conns} connection{'s' if conns > 1 else ''}")
        ax.grid(True, axis="x", which="both", alpha=0.3)
        if col == len(connections) - 1:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        right = max(p50 + p99, default=1)
        ax.set_xlim(left=floor, right=right * 30)
    fig.suptitle(f"Flaregate gateway overhead — {report['generated_at']} — {report['machine']['cores']} cores "
                 f"shared by wrk, the mock and the gateways (medians of {report['settings']['repeats']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
