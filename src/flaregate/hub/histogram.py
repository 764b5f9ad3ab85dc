"""Fixed-bucket latency histograms: cheap to store in SQL, exact to merge across rollups.

Buckets are cumulative-upper-bound style as in Prometheus (``le``). Percentiles from a
histogram are estimated by linear interpolation inside the bucket that holds the rank,
as Prometheus' ``histogram_quantile`` does; the live view uses exact recent samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

# Upper bounds in milliseconds; the last bucket (index len(BOUNDS_MS)) is +Inf. Fine at the
# low end because gateway overhead is measured in single milliseconds.
BOUNDS_MS: tuple[float, ...] = (
    0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000,
)
INF_INDEX = len(BOUNDS_MS)

# The measured quantities kept as histograms.
METRICS = ("total", "upstream", "overhead", "ttft")


def bucket_index(ms: float) -> int:
    """Index of the first bucket whose upper bound holds ``ms``."""
    for index, bound in enumerate(BOUNDS_MS):
        if ms <= bound:
            return index
    return INF_INDEX


def quantile(counts: Mapping[int, int], q: float) -> float | None:
    """Estimate the q-quantile (0..1) in ms from bucket counts {index: count}."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index in range(INF_INDEX + 1):
        count = counts.get(index, 0)
        if count and seen + count >= rank:
            if index == INF_INDEX:
                return float(BOUNDS_MS[-1])  # beyond the last bound: report the bound
            lower = BOUNDS_MS[index - 1] if index else 0.0
            upper = BOUNDS_MS[index]
            return round(lower + (upper - lower) * max(0.0, rank - seen) / count, 3)
        seen += count
    return float(BOUNDS_MS[-1])


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Exact nearest-rank percentile of already sorted samples."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return round(sorted_values[index], 3)
