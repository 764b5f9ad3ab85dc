"""Passive health and a circuit breaker per route target, kept in this process's memory.

Every upstream attempt reports its outcome here. A target's circuit opens after
``circuit_failure_threshold`` consecutive failures, half-opens after
``circuit_cooldown_seconds`` (one trial request at a time), and closes after
``circuit_half_open_successes`` trial successes; a failed trial opens it again. A provider's
``Retry-After`` (or ``retry-after-ms``) puts the target in a cooldown that is only ever
extended, never shortened. Each change is handed to ``emit`` as an event for the metrics hub.

The state is per process (per isolate on the edge): a fresh isolate starts healthy and
learns again from its own traffic.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypedDict

from ..ports import Clock
from .resilience import ResiliencePolicy

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
RECENT_ERRORS = 10
MAX_COOLDOWN_SECONDS = 3600.0  # a provider cannot switch a target off for longer than this


class RecentError(TypedDict):
    """One of a target's last failures, as the upstream report lists them."""

    ts: float
    kind: str
    status: int | None
    message: str


def parse_retry_after(headers: Mapping[str, str], now: float) -> tuple[float, str] | None:
    """Seconds to wait from ``retry-after-ms`` / ``x-ms-retry-after-ms`` / ``retry-after``
    (delta seconds or an HTTP date), with the header it came from; None when absent or bad."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value:
            try:
                ms = float(value)
            except ValueError:
                continue
            if math.isfinite(ms) and ms >= 0:
                return min(ms / 1000, MAX_COOLDOWN_SECONDS), name
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_COOLDOWN_SECONDS), "retry-after"


@dataclass(slots=True)
class TargetHealth:
    provider: str
    model: str
    state: str = CLOSED
    requests: int = 0
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    success_rate: float = 1.0  # EWMA of 1 (success) / 0 (failure)
    latency_ms: float | None = None  # EWMA of whole-response latency
    ttft_ms: float | None = None  # EWMA of time to first token (streams)
    in_flight: int = 0
    opened_at: float | None = None  # monotonic
    cooldown_until: float = 0.0  # monotonic; from Retry-After
    last_failure_at: float | None = None  # monotonic
    trial_in_flight: bool = False
    trial_successes: int = 0
    circuit_opens: int = 0
    recent_errors: deque[RecentError] = field(default_factory=lambda: deque(maxlen=RECENT_ERRORS))

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


class HealthRegistry:
    def __init__(self, policy: ResiliencePolicy, clock: Clock, emit: Callable[[dict[str, Any]], None]) -> None:
        self.policy = policy
        self._clock = clock
        self._emit = emit
        self._targets: dict[tuple[str, str], TargetHealth] = {}

    def get(self, provider: str, model: str) -> TargetHealth:
        health = self._targets.get((provider, model))
        if health is None:
            health = self._targets[(provider, model)] = TargetHealth(provider, model)
        return health

    def all(self) -> list[TargetHealth]:
        return list(self._targets.values())

    # -- availability ----------------------------------------------------------------------
    def circuit_wait(self, h: TargetHealth) -> float:
        """Seconds until the circuit lets a request through (0 = now)."""
        if h.state == OPEN and h.opened_at is not None:
            return max(0.0, h.opened_at + self.policy.circuit_cooldown_seconds - self._clock.monotonic())
        if h.state == HALF_OPEN and h.trial_in_flight:
            return self.policy.circuit_cooldown_seconds  # someone else's trial decides first
        return 0.0

    def cooldown_wait(self, h: TargetHealth) -> float:
        return max(0.0, h.cooldown_until - self._clock.monotonic())

    def failed_recently(self, h: TargetHealth) -> bool:
        """Its last attempt failed less than a circuit cooldown ago (a softer signal than the
        circuit: performance strategies rank such targets last until the cooldown passes)."""
        return (h.consecutive_failures > 0 and h.last_failure_at is not None
                and self._clock.monotonic() - h.last_failure_at < self.policy.circuit_cooldown_seconds)

    def acquire(self, h: TargetHealth) -> None:
        """An attempt on ``h`` starts (the caller checked it is available)."""
        if h.state == OPEN:
            self._transition(h, HALF_OPEN, "cooldown elapsed; letting one trial request through")
        if h.state == HALF_OPEN:
            h.trial_in_flight = True
        h.in_flight += 1
        h.requests += 1

    def release(self, h: TargetHealth) -> None:
        h.in_flight = max(0, h.in_flight - 1)

    # -- outcomes --------------------------------------------------------------------------
    def success(self, h: TargetHealth, latency_ms: float | None = None, ttft_ms: float | None = None) -> None:
        alpha = self.policy.ewma_alpha
        h.successes += 1
        h.consecutive_failures = 0
        h.success_rate = (1 - alpha) * h.success_rate + alpha
        if latency_ms is not None:
            h.latency_ms = latency_ms if h.latency_ms is None else (1 - alpha) * h.latency_ms + alpha * latency_ms
        if ttft_ms is not None:
            h.ttft_ms = ttft_ms if h.ttft_ms is None else (1 - alpha) * h.ttft_ms + alpha * ttft_ms
        if h.state == HALF_OPEN:
            h.trial_in_flight = False
            h.trial_successes += 1
            if h.trial_successes >= self.policy.circuit_half_open_successes:
                self._transition(h, CLOSED, "trial request succeeded")

    def failure(self, h: TargetHealth, kind: str, message: str, status: int | None = None,
                retry_after: tuple[float, str] | None = None, latency_ms: float | None = None) -> None:
        alpha = self.policy.ewma_alpha
        h.failures += 1
        h.consecutive_failures += 1
        h.last_failure_at = self._clock.monotonic()
        h.success_rate = (1 - alpha) * h.success_rate
        if latency_ms is not None:  # a slow failure is slow: the latency strategies should know
            h.latency_ms = latency_ms if h.latency_ms is None else (1 - alpha) * h.latency_ms + alpha * latency_ms
        h.recent_errors.append({"ts": round(self._clock.now(), 3), "kind": kind, "status": status,
                                "message": message[:300]})
        if retry_after is not None:
            self._cool_down(h, *retry_after)
        if h.state == HALF_OPEN:
            h.trial_in_flight = False
            self._transition(h, OPEN, f"trial request failed ({kind})")
        elif h.state == CLOSED and h.consecutive_failures >= self.policy.circuit_failure_threshold:
            self._transition(h, OPEN, f"{h.consecutive_failures} consecutive failures (last: {kind})")

    def abandon(self, h: TargetHealth) -> None:
        """The attempt ended with no verdict on the provider (e.g. the client went away)."""
        if h.state == HALF_OPEN:
            h.trial_in_flight = False

    def _cool_down(self, h: TargetHealth, seconds: float, source: str) -> None:
        until = self._clock.monotonic() + seconds
        if until <= h.cooldown_until:
            return  # never shorten a cooldown that is already longer
        h.cooldown_until = until
        self._emit({"type": "cooldown", "ts": round(self._clock.now(), 3), "target": h.key,
                    "provider": h.provider, "model": h.model, "seconds": round(seconds, 3), "source": source})

    def _transition(self, h: TargetHealth, to: str, reason: str) -> None:
        previous, h.state = h.state, to
        if to == OPEN:
            h.opened_at = self._clock.monotonic()
            h.circuit_opens += 1
        if to != HALF_OPEN:
            h.trial_successes = 0
        if to == CLOSED:
            h.opened_at = None
        self._emit({"type": "circuit", "ts": round(self._clock.now(), 3), "target": h.key,
                    "provider": h.provider, "model": h.model, "from": previous, "to": to, "reason": reason})

    # -- reads -----------------------------------------------------------------------------
    def report(self, h: TargetHealth) -> dict[str, Any]:
        cooldown = self.cooldown_wait(h)
        circuit = self.circuit_wait(h) if h.state == OPEN else 0.0
        return {
            "circuit": h.state,
            "available": cooldown == 0 and (h.state != OPEN or circuit == 0),
            "circuit_retry_in_s": round(circuit, 3) if h.state == OPEN else None,
            "cooldown_remaining_s": round(cooldown, 3),
            "requests": h.requests,
            "successes": h.successes,
            "failures": h.failures,
            "consecutive_failures": h.consecutive_failures,
            "success_rate": round(h.success_rate, 4),
            "latency_ewma_ms": None if h.latency_ms is None else round(h.latency_ms, 3),
            "ttft_ewma_ms": None if h.ttft_ms is None else round(h.ttft_ms, 3),
            "in_flight": h.in_flight,
            "circuit_opens": h.circuit_opens,
            "recent_errors": list(h.recent_errors),
        }
