"""Fixed-window invariants with a fake clock (hypothesis)."""

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from flaregate.ratelimits.algorithms.fixed_window import MONTH, adjust, bounds, take

limits = st.integers(min_value=1, max_value=30).map(float)
windows = st.sampled_from([1.0, 2.5, 10.0, 60.0])
gaps = st.lists(st.floats(min_value=0, max_value=4, allow_nan=False), min_size=1, max_size=80)


def run(limit, window, steps, start=1_000.0):
    state, now, admitted = None, start, []
    for gap in steps:
        now += gap
        decision = take(state, now, limit, 1.0, window)
        state = decision.state
        if decision.allowed:
            admitted.append(now)
    return admitted


@settings(max_examples=300, deadline=None)
@given(limits, windows, gaps)
def test_no_aligned_window_admits_more_than_the_limit(limit, window, steps):
    admitted = run(limit, window, steps)
    per_window = {}
    for t in admitted:
        start = bounds(t, window)[0]
        per_window[start] = per_window.get(start, 0) + 1
    assert all(count <= limit for count in per_window.values())
    # The documented price of fixed windows: any span of one window length sees at most 2 x limit.
    for i, t in enumerate(admitted):
        assert sum(1 for u in admitted[i:] if u < t + window) <= 2 * limit


@given(limits, windows, st.floats(min_value=0, max_value=1000, allow_nan=False))
def test_a_fresh_window_admits_exactly_its_limit_in_a_burst(limit, window, now):
    state, admitted = None, 0
    for _ in range(int(limit) + 5):
        decision = take(state, now, limit, 1.0, window)
        state = decision.state
        admitted += decision.allowed
    assert admitted == limit
    end = bounds(now, window)[1]
    assert not decision.allowed and abs(decision.retry_after - (end - now)) < 1e-9


@given(limits, windows, st.integers(min_value=1, max_value=5))
def test_the_count_returns_exactly_at_the_window_boundary(limit, window, later_windows):
    state = None
    for _ in range(int(limit)):
        state = take(state, 0.0, limit, 1.0, window).state
    assert not take(state, window * 0.999, limit, 1.0, window).allowed  # not a moment early
    boundary = window * later_windows
    admitted = 0
    for _ in range(int(limit) + 3):
        decision = take(state, boundary, limit, 1.0, window)
        state = decision.state
        admitted += decision.allowed
    assert admitted == limit


def test_calendar_months_are_utc_months_including_december_and_leap_february():
    def ts(*args):
        return datetime(*args, tzinfo=UTC).timestamp()

    assert bounds(ts(2024, 2, 29, 23, 59), None, MONTH) == (ts(2024, 2, 1), ts(2024, 3, 1))
    assert bounds(ts(2025, 12, 31, 12), None, MONTH) == (ts(2025, 12, 1), ts(2026, 1, 1))
    assert bounds(ts(2026, 1, 1), None, MONTH) == (ts(2026, 1, 1), ts(2026, 2, 1))
    assert bounds(ts(2026, 3, 5, 10), 86400.0) == (ts(2026, 3, 5), ts(2026, 3, 6))  # a UTC day


def test_adjust_refunds_in_the_same_window_and_leaves_an_ended_window_alone():
    state = take(None, 5.0, 100.0, 40.0, 10.0).state
    refunded = adjust(state, 7.0, 5.0, -30.0, 10.0)
    assert refunded.used == 10.0
    charged = adjust(refunded, 8.0, 5.0, 25.0, 10.0)
    assert charged.used == 35.0  # real usage above the estimate is charged, never refused
    assert adjust(charged, 12.0, 5.0, -35.0, 10.0) is charged  # that window has ended
    assert adjust(state, 7.0, 5.0, -1000.0, 10.0).used == 0.0


def test_a_clock_stepping_backwards_does_not_open_a_new_window():
    state = None
    for _ in range(3):
        state = take(state, 25.0, 3.0, 1.0, 10.0).state
    assert not take(state, 15.0, 3.0, 1.0, 10.0).allowed
