"""Per-request phase timings, reported in ``server-timing`` and analytics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .ports import Clock


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

    def server_timing(self) -> str:
        parts = [f"{name};dur={ms:.2f}" for name, ms in self.phases.items()]
        parts.append(f"total;dur={self.elapsed_ms():.2f}")
        return ", ".join(parts)
