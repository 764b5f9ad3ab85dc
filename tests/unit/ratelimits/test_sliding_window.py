"""Sliding-log invariants with a fake clock (hypothesis)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from flaregate.ratelimits.algorithms.sliding_window import BUCKETS, adjust, stamp, take

limits = st.integers(min_value=1, max_value=30).map(float)
windows = st.sampled_from([1.0, 3.0, 10.0, 60.0])
steps = st.lists(
    st.tuples(st.floats(min_value=0, max_value=3, allow_nan=False), st.integers(min_value=1, max_value=4)),
    min_size=1, max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(limits, windows, steps)
def test_no_window_of_its_length_admits_more_than_the_limit(limit, window, requests):
    log, now, admitted = None, 500.0, []
    for gap, cost in requests:
        now += gap
        decision = take(log, now, limit, window, float(cost))
        log = decision.log
        if decision.allowed:
            admitted.append((now, cost))
        assert len(log.entries) <= BUCKETS + 1  # bounded state whatever the limit
    # Every interval [t, t + window) starting at an admission holds at most `limit` units.
    for i, (start, _) in enumerate(admitted):
        assert sum(c for t, c in admitted[i:] if t < start + window) <= limit


@given(limits, windows, st.floats(min_value=0, max_value=10_000, allow_nan=False))
def test_an_empty_log_admits_exactly_its_limit_in_a_burst(limit, window, now):
    log, admitted = None, 0
    for _ in range(int(limit) + 5):
        decision = take(log, now, limit, window, 1.0)
        log = decision.log
        admitted += decision.allowed
    assert admitted == limit
    # 1e-9 either side: float noise (e.g. now=1.1, window=3 gives 2.9999999999999996).
    assert window - 1e-9 <= decision.retry_after <= window + window / BUCKETS + 1e-9


@settings(max_examples=200, deadline=None)
@given(limits, windows, steps)
def test_retry_after_is_exactly_when_the_request_fits(limit, window, requests):
    log, now = None, 100.0
    for gap, cost in requests:
        now += gap
        decision = take(log, now, limit, window, float(cost))
        if not decision.allowed and cost <= limit:
            wait = decision.retry_after  # exact up to float resolution (a microsecond here)
            assert take(log, now + wait + 1e-6, limit, window, float(cost)).allowed
            if wait > 1e-6:
                assert not take(log, now + wait - 1e-6, limit, window, float(cost)).allowed
        log = decision.log


@given(limits, windows)
def test_capacity_returns_one_window_later_within_the_stated_bound(limit, window):
    log = None
    for _ in range(int(limit)):
        log = take(log, 0.0, limit, window, 1.0).log
    assert not take(log, window * 0.999, limit, window, 1.0).allowed
    later = window + window / BUCKETS  # the error bound: at most 1/60 of a window late
    admitted = 0
    for _ in range(int(limit) + 3):
        decision = take(log, later, limit, window, 1.0)
        log = decision.log
        admitted += decision.allowed
    assert admitted == limit


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False), windows)
def test_stamps_never_round_down(t, window):
    assert t <= stamp(t, window) <= t + window / BUCKETS + 1e-6


def test_adjust_refunds_the_reserved_entry_and_never_below_zero():
    log = take(None, 10.0, 100.0, 60.0, 50.0).log
    refunded = adjust(log, 12.0, 60.0, 10.0, -45.0)
    assert take(refunded, 12.0, 100.0, 60.0, 95.0).allowed
    assert adjust(log, 12.0, 60.0, 10.0, -500.0).entries == ()
    assert adjust(log, 100.0, 60.0, 10.0, -45.0).entries == ()  # already slid out: nothing to do
    charged = adjust(log, 12.0, 60.0, 10.0, 30.0)
    assert take(charged, 12.0, 100.0, 60.0, 1.0).used == 81.0
