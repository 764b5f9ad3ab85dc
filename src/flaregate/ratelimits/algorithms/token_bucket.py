"""Token-bucket arithmetic, pure so it can be property-tested with a fake clock.

A bucket holds up to ``capacity`` units and refills continuously at ``refill_per_second``;
a burst of exactly ``capacity`` passes from a full bucket, after that the rate decides.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BucketState:
    tokens: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class BucketDecision:
    allowed: bool
    state: BucketState
    retry_after: float  # seconds until `cost` tokens are available (0 when allowed)
    reset_after: float  # seconds until the bucket is full again


def _refill(state: BucketState | None, now: float, capacity: float, refill_per_second: float) -> BucketState:
    if state is None:
        return BucketState(capacity, now)
    # A clock that steps backwards refills nothing (the object's clock decides).
    elapsed = max(0.0, now - state.updated_at)
    tokens = min(capacity, state.tokens + elapsed * refill_per_second)
    return BucketState(tokens, max(now, state.updated_at))


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
    return BucketDecision(allowed, BucketState(tokens, current.updated_at), retry_after, reset_after)


def adjust(
    state: BucketState | None, now: float, capacity: float, refill_per_second: float, delta: float
) -> BucketState:
    """Charge ``delta`` more tokens (a refund when negative) without refusing anything.

    Used to reconcile a reservation with the real usage: the bucket may go negative (a debt
    that later requests wait out) and a refund never fills it beyond capacity.
    """
    current = _refill(state, now, capacity, refill_per_second)
    return BucketState(min(capacity, current.tokens - delta), current.updated_at)
