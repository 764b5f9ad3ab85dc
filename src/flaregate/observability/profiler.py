"""Per-request phase timings, reported in ``server-timing`` and analytics.

Phases: parse, auth, ratelimit, cache, route, upstream_ttfb (until the provider's
response headers, failover attempts included), upstream (the whole provider call),
format; plus ``overhead`` (total minus upstream) and ``total``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..ports import Clock


class Profiler:
    __slots__ = ("_clock", "_start", "phases")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._start = clock.monotonic()
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = self._clock.monotonic()
        try:
            yield
        finally:
            self.add(name, (self._clock.monotonic() - started) * 1000)

    def add(self, name: str, ms: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + ms

    def elapsed_ms(self) -> float:
        return (self._clock.monotonic() - self._start) * 1000

    def snapshot(self) -> dict[str, float]:
        return {name: round(ms, 3) for name, ms in self.phases.items()}

    def server_timing(self) -> str:
        total = self.elapsed_ms()
        parts = [f"{name};dur={ms:.2f}" for name, ms in self.phases.items()]
        if "upstream" in self.phases:
            parts.append(f"overhead;dur={max(0.0, total - self.phases['upstream']):.2f}")
        parts.append(f"total;dur={total:.2f}")
        return ", ".join(parts)
