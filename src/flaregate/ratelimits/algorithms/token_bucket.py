"""Token-bucket arithmetic, pure so it can be property-tested with a fake clock.

A bucket holds up to ``capacity`` units and refills continuously at ``refill_per_second``;
a burst of exactly ``capacity`` passes from a full bucket, after that the rate decides.

Leases (``ratelimits/leases.py``): units the object hands to an isolate in advance stay in
``held`` until a little after that isolate's lease has ended (``lease`` takes them, ``give_back``
returns what it did not spend). While units are held the bucket refills only up to
``capacity`` minus them, so the bucket and the leases together never hold more than
``capacity``: over any interval a leased bucket admits no more than ``capacity + refill x
interval``, as the bucket asked once per request would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HELD_ENTRIES = 24  # at most this many (until, units) entries: later ones absorb earlier ones


@dataclass(frozen=True, slots=True)
class BucketState:
    tokens: float
    updated_at: float
    held: tuple[tuple[float, float], ...] = ()  # (until, units) lent to leases, ``until`` ascending


@dataclass(frozen=True, slots=True)
class BucketDecision:
    allowed: bool
    state: BucketState
    retry_after: float  # seconds until `cost` tokens are available (0 when allowed)
    reset_after: float  # seconds until the bucket is full again


def held_units(state: BucketState) -> float:
    return sum(units for _, units in state.held)


def _refill(state: BucketState | None, now: float, capacity: float, refill_per_second: float) -> BucketState:
    if state is None:
        return BucketState(capacity, now)
    # A clock that steps backwards refills nothing (the object's clock decides).
    start = state.updated_at
    end = max(now, start)
    tokens = state.tokens
    if not state.held:
        return BucketState(min(capacity, tokens + (end - start) * refill_per_second), end)
    # Piecewise: up to capacity minus what leases hold, which falls as their entries end.
    lent = held_units(state)
    for until, units in state.held:
        if until >= end:
            break
        if until > start:
            tokens = min(capacity - lent, tokens + (until - start) * refill_per_second)
            start = until
        lent -= units
    tokens = min(capacity - lent, tokens + (end - start) * refill_per_second)
    return BucketState(tokens, end, tuple(entry for entry in state.held if entry[0] > end))


def take(
    state: BucketState | None, now: float, capacity: float, refill_per_second: float, cost: float
) -> BucketDecision:
    """Refill lazily up to ``now``, then try to take ``cost`` tokens."""
    current = _refill(state, now, capacity, refill_per_second)
    tokens = current.tokens
    allowed = tokens >= cost
    if allowed:
        tokens -= cost
        retry_after = 0.0
    else:
        retry_after = (cost - tokens) / refill_per_second
    reset_after = (capacity - tokens) / refill_per_second
    return BucketDecision(allowed, BucketState(tokens, current.updated_at, current.held), retry_after, reset_after)


def lease(state: BucketState, units: float, until: float) -> BucketState:
    """Lend ``units`` (no more than ``state.tokens``: the caller checked) to a lease whose
    units count as held until ``until`` (after the lease itself ends: room for a give-back).
    ``until`` on a grid (``grid``) keeps the entries few; past ``HELD_ENTRIES`` the two that
    end first merge into the later one (held longer, never shorter; the earlier one's
    give-back then finds no entry and its units stay spent)."""
    held = dict(state.held)
    held[until] = held.get(until, 0.0) + units
    entries = sorted(held.items())
    while len(entries) > HELD_ENTRIES:
        (_, first), (second_until, second) = entries[0], entries[1]
        entries[:2] = [(second_until, first + second)]
    return BucketState(state.tokens - units, state.updated_at, tuple(entries))


def give_back(
    state: BucketState | None, now: float, capacity: float, refill_per_second: float, until: float, units: float,
    lent: float = 0.0,
) -> BucketState | None:
    """A lease has ended: ``lent`` (what it was lent; ``until`` is what ``lease`` was given)
    is no longer held, and the ``units`` of it not spent come back. Only while its entry is
    held: once the entry has ended, the units stay spent (refilling has already made up
    for them), so a give-back never adds more than leases took."""
    if state is None:
        return None
    current = _refill(state, now, capacity, refill_per_second)
    held = dict(current.held)
    entry = held.get(until)
    if entry is None:  # ended (or merged into a later entry)
        return current
    back = min(units, entry)
    release = min(entry, max(lent, back))
    if entry - release > 1e-9:
        held[until] = entry - release
    else:
        del held[until]
    return BucketState(current.tokens + back, current.updated_at, tuple(sorted(held.items())))


def adjust(
    state: BucketState | None, now: float, capacity: float, refill_per_second: float, delta: float
) -> BucketState:
    """Charge ``delta`` more tokens (a refund when negative) without refusing anything.

    Used to reconcile a reservation with the real usage: the bucket may go negative (a debt
    that later requests wait out) and a refund never fills it beyond capacity (less what
    leases hold).
    """
    current = _refill(state, now, capacity, refill_per_second)
    ceiling = capacity - held_units(current)
    return BucketState(min(ceiling, current.tokens - delta), current.updated_at, current.held)


def grid(t: float, step: float) -> float:
    """``t`` rounded up to a multiple of ``step`` (so leases granted close together share an entry)."""
    rounded = math.ceil(t / step) * step
    return rounded if rounded >= t else rounded + step
