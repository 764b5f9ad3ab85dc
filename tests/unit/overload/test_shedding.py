"""Adaptive limit and priority shedding on a fake clock (no timing thresholds)."""

from __future__ import annotations

import pytest

from flaregate.overload import AimdLimit, LoadShedder, Priority


def test_limit_backs_off_on_slow_samples_and_recovers_when_used() -> None:
    limit = AimdLimit(initial=20, min_limit=2, slow_after_seconds=1.0, backoff_ratio=0.5)
    limit.on_sample(latency_seconds=3.0, in_flight=20)
    assert limit.current == 10
    for _ in range(10):
        limit.on_sample(latency_seconds=9.0, in_flight=1)
    assert limit.current == 2  # never below the floor
    limit.on_sample(latency_seconds=0.1, in_flight=2)
    assert limit.current == 3


def test_limit_does_not_grow_while_idle() -> None:
    limit = AimdLimit(initial=10)
    for _ in range(50):
        limit.on_sample(latency_seconds=0.01, in_flight=1)
    assert limit.current == 10


def test_dropped_counts_as_overload() -> None:
    limit = AimdLimit(initial=10, backoff_ratio=0.5)
    limit.on_sample(latency_seconds=0.01, in_flight=1, dropped=True)
    assert limit.current == 5


def test_bad_backoff_rejected() -> None:
    with pytest.raises(ValueError):
        AimdLimit(backoff_ratio=1.5)


def test_low_priority_is_shed_first_and_high_keeps_headroom() -> None:
    shedder = LoadShedder(AimdLimit(initial=10))
    low = [shedder.try_acquire(Priority.LOW, now=0.0) for _ in range(8)]
    assert sum(p is not None for p in low) == 5  # low may fill half the limit
    high = [shedder.try_acquire(Priority.HIGH, now=0.0) for _ in range(8)]
    assert sum(p is not None for p in high) == 5  # the remaining headroom is high's
    assert shedder.snapshot()["shed"] == {"low": 3, "normal": 0, "high": 3}
    assert shedder.try_acquire(Priority.NORMAL, now=0.0) is None


def test_release_frees_a_slot_once_and_feeds_the_limit() -> None:
    shedder = LoadShedder(AimdLimit(initial=4, backoff_ratio=0.5, slow_after_seconds=1.0))
    permits = [shedder.try_acquire(Priority.HIGH, now=0.0) for _ in range(4)]
    assert all(permits) and shedder.try_acquire(Priority.HIGH, now=0.0) is None
    first = permits[0]
    assert first is not None
    first.release(now=5.0)  # slow: the limit halves
    first.release(now=5.0)  # idempotent
    assert shedder.in_flight == 3
    assert shedder.limit.current == 2
    assert shedder.try_acquire(Priority.HIGH, now=5.0) is None  # 3 in flight > new limit


def test_fixed_max_in_flight_per_target() -> None:
    shedder = LoadShedder(AimdLimit(initial=100), max_in_flight_per_target={"openai": 2})
    a = shedder.try_acquire(Priority.HIGH, now=0.0, target="openai")
    b = shedder.try_acquire(Priority.HIGH, now=0.0, target="openai")
    assert a and b
    assert shedder.try_acquire(Priority.HIGH, now=0.0, target="openai") is None
    assert shedder.try_acquire(Priority.HIGH, now=0.0, target="anthropic") is not None
    a.release(now=0.1)
    assert shedder.try_acquire(Priority.HIGH, now=0.1, target="openai") is not None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("high", Priority.HIGH),
        (" LOW ", Priority.LOW),
        ("bogus", Priority.NORMAL),
        (3, Priority.NORMAL),
        (None, Priority.NORMAL),
    ],
)
def test_priority_parse_never_raises(raw: object, expected: Priority) -> None:
    assert Priority.parse(raw) is expected
