"""AIMD concurrency limit on observed upstream latency (after Netflix concurrency-limits).

Additive increase while the limit is in use and latency is healthy; multiplicative
decrease when a request is slower than the tolerated latency or fails as overload.
Pure arithmetic, O(1) per sample: safe on the request path of the Free plan.
"""

from __future__ import annotations


class AimdLimit:
    def __init__(
        self,
        *,
        initial: int = 20,
        min_limit: int = 1,
        max_limit: int = 1000,
        backoff_ratio: float = 0.9,
        slow_after_seconds: float = 5.0,
    ) -> None:
        if not 0 < backoff_ratio < 1:
            raise ValueError("backoff_ratio must be in (0, 1)")
        self._min = max(1, min_limit)
        self._max = max(self._min, max_limit)
        self._limit = float(min(max(initial, self._min), self._max))
        self._backoff = backoff_ratio
        self._slow_after = slow_after_seconds

    @property
    def current(self) -> int:
        return int(self._limit)

    def on_sample(self, *, latency_seconds: float, in_flight: int, dropped: bool = False) -> None:
        """One finished upstream request; `in_flight` counts it (the load it ran under)."""
        if dropped or latency_seconds > self._slow_after:
            self._limit = max(float(self._min), self._limit * self._backoff)
        elif in_flight * 2 >= self._limit:
            # Grow only when the limit is actually being used, else it drifts up unbounded.
            self._limit = min(float(self._max), self._limit + 1.0)
