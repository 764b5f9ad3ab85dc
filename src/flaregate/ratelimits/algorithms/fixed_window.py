"""Fixed-window counting, pure so it can be property-tested with a fake clock.

Windows are aligned: to multiples of ``window_seconds`` since the epoch (so a 86 400 s window
is a UTC day) or to UTC calendar months. Within one window at most ``limit`` units pass.
The known price of fixed windows: around a boundary up to 2 x limit can pass within
``window_seconds`` (the end of one window, then the start of the next).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

MONTH = "month"
EPSILON = 1e-9  # float slack for fractional units (USD)


@dataclass(frozen=True, slots=True)
class WindowState:
    start: float  # start of the window the count belongs to
    used: float


@dataclass(frozen=True, slots=True)
class WindowDecision:
    allowed: bool
    state: WindowState
    retry_after: float  # seconds until `cost` fits (0 when allowed)
    reset_after: float  # seconds until the count is back to zero
    window_seconds: float  # length of the current window


def bounds(now: float, window_seconds: float | None, calendar: str | None = None) -> tuple[float, float]:
    """Start and end of the window that contains ``now``."""
    if calendar == MONTH:
        day = datetime.fromtimestamp(now, tz=UTC)
        first = datetime(day.year, day.month, 1, tzinfo=UTC)
        following = datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)
        return first.timestamp(), following.timestamp()
    if not window_seconds or window_seconds <= 0:
        raise ValueError("a fixed window needs window_seconds > 0 or a calendar period")
    start = math.floor(now / window_seconds) * window_seconds
    return start, start + window_seconds


def _current(
    state: WindowState | None, now: float, window_seconds: float | None, calendar: str | None
) -> tuple[float, float, float]:
    start, end = bounds(now, window_seconds, calendar)
    if state is not None and state.start >= start:
        # Same window, or the clock stepped back into an earlier one: the stored count stands.
        return state.start, bounds(state.start, window_seconds, calendar)[1], state.used
    return start, end, 0.0


def take(
    state: WindowState | None,
    now: float,
    limit: float,
    cost: float,
    window_seconds: float | None,
    calendar: str | None = None,
) -> WindowDecision:
    start, end, used = _current(state, now, window_seconds, calendar)
    allowed = used + cost <= limit + EPSILON
    if allowed:
        used += cost
    # Refused: it fits again when this window ends (never, when cost > limit: the caller says so).
    retry_after = 0.0 if allowed else max(0.0, end - now)
    reset_after = max(0.0, end - now) if used > 0 else 0.0
    return WindowDecision(allowed, WindowState(start, used), retry_after, reset_after, end - start)


def adjust(
    state: WindowState | None,
    now: float,
    at: float,
    delta: float,
    window_seconds: float | None,
    calendar: str | None = None,
) -> WindowState | None:
    """Charge ``delta`` more (a refund when negative) to the window that held time ``at``.

    A reservation whose window has already ended is left alone: that window is gone.
    """
    start, _, used = _current(state, now, window_seconds, calendar)
    if bounds(min(at, now), window_seconds, calendar)[0] != start:
        return state
    return WindowState(start, max(0.0, used + delta))
