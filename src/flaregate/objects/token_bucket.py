"""Token-bucket arithmetic, pure so it can be property-tested with a fake clock."""

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


def take(
    state: BucketState | None, now: float, capacity: float, refill_per_second: float, cost: float
) -> BucketDecision:
    """Refill lazily up to ``now``, then try to take ``cost`` tokens."""
    if state is None:
        tokens = capacity
    else:
        # A clock that steps backwards refills nothing (the object's clock decides).
        elapsed = max(0.0, now - state.updated_at)
        tokens = min(capacity, state.tokens + elapsed * refill_per_second)
    allowed = tokens >= cost
    if allowed:
        tokens -= cost
        retry_after = 0.0
    else:
        retry_after = (cost - tokens) / refill_per_second
    reset_after = (capacity - tokens) / refill_per_second
    updated_at = now if state is None else max(now, state.updated_at)
    return BucketDecision(allowed, BucketState(tokens, updated_at), retry_after, reset_after)
