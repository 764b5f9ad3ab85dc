"""Sliding-window counting as a log of coarse time stamps, pure so it can be property-tested.

Algorithm: a sliding **log** (not the weighted two-counter estimate). Each admitted unit is
logged with its time rounded *up* to a multiple of ``window / BUCKETS``; entries with the
same stamp are merged, so a key's state never holds more than BUCKETS + 1 entries however
high the limit. A request is admitted when the logged units with stamps inside
``(now - window, now]`` plus its cost stay within the limit.

Error bound: rounding up only ever keeps an entry in the log longer, never shorter, so in
**every** interval of length ``window`` at most ``limit`` units are admitted (no
over-admission at all, unlike weighted counters). The price is on the strict side: an entry
can count for up to ``window / BUCKETS`` (1/60 of the window) longer than in an exact log,
so a client may wait up to that much longer than strictly needed.

Leases (``ratelimits/leases.py``): units handed to an isolate in advance are logged at the
stamp of the moment its lease ends (``lease``), never earlier than any of them can be
spent, so the bound above holds for the units as spent; what a lease did not spend is taken
off that entry again (``give_back``). Units logged after a lease's entry are filed under it
(the clock-steps-back rule), so they count up to one lease lifetime longer: hence a short
lifetime (``lease_seconds``) against the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BUCKETS = 60
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class SlidingLog:
    entries: tuple[tuple[float, float], ...] = ()  # (stamp, units), stamps ascending


@dataclass(frozen=True, slots=True)
class SlidingDecision:
    allowed: bool
    log: SlidingLog
    used: float  # units in the window after this decision
    retry_after: float  # seconds until `cost` fits (0 when allowed)
    reset_after: float  # seconds until the window is empty


def stamp(t: float, window: float) -> float:
    """``t`` rounded up to the log's resolution (never below ``t``, despite float rounding)."""
    step = window / BUCKETS
    rounded = math.ceil(t / step) * step
    return rounded if rounded >= t else rounded + step


def _live(log: SlidingLog | None, now: float, window: float) -> list[tuple[float, float]]:
    return [(s, u) for s, u in (log.entries if log else ()) if s > now - window]


def _add(entries: list[tuple[float, float]], at: float, units: float) -> list[tuple[float, float]]:
    merged = dict(entries)
    merged[at] = max(0.0, merged.get(at, 0.0) + units)
    return sorted((s, u) for s, u in merged.items() if u > EPSILON)


def take(log: SlidingLog | None, now: float, limit: float, window: float, cost: float) -> SlidingDecision:
    entries = _live(log, now, window)
    used = sum(u for _, u in entries)
    allowed = used + cost <= limit + EPSILON
    retry_after = 0.0
    if allowed:
        # A clock that steps backwards files the entry under the latest stamp (kept longer).
        at = max(stamp(now, window), entries[-1][0] if entries else -math.inf)
        entries = _add(entries, at, cost)
        used += cost
    else:
        # The earliest moment enough of the oldest entries have slid out of the window.
        need, freed = used + cost - limit, 0.0
        retry_after = window
        for s, u in entries:
            freed += u
            if freed >= need - EPSILON:
                retry_after = s + window - now
                break
    reset_after = entries[-1][0] + window - now if entries else 0.0
    return SlidingDecision(allowed, SlidingLog(tuple(entries)), used, max(0.0, retry_after), max(0.0, reset_after))


def adjust(log: SlidingLog | None, now: float, window: float, at: float, delta: float) -> SlidingLog:
    """Charge ``delta`` more (a refund when negative) to the entry logged at time ``at``.

    An entry that has already slid out is left alone; a refund never takes an entry below 0.
    """
    entries = _live(log, now, window)
    when = stamp(min(at, now), window)
    if when <= now - window:
        return SlidingLog(tuple(entries))
    return SlidingLog(tuple(_add(entries, when, delta)))


def lease_seconds(window: float, longest: float) -> float:
    """How long a lease of this log may last: short against the window (see above)."""
    return min(longest, window / 20)


def lease(log: SlidingLog, now: float, window: float, until: float, units: float) -> SlidingLog:
    """Log ``units`` lent to a lease that ends at ``until`` (the caller checked they fit)."""
    return SlidingLog(tuple(_add(_live(log, now, window), stamp(until, window), units)))


def give_back(log: SlidingLog | None, now: float, window: float, until: float, units: float) -> SlidingLog | None:
    """Take ``units`` a lease did not spend off the entry ``lease`` logged them in."""
    if log is None:
        return None
    entries = _live(log, now, window)
    when = stamp(until, window)
    logged = dict(entries).get(when)
    if logged is None:
        return SlidingLog(tuple(entries))
    return SlidingLog(tuple(_add(entries, when, -min(units, logged))))
