"""Sliding-log invariants with a fake clock (hypothesis)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from flaregate.ratelimits.algorithms.sliding_window import (
    BUCKETS,
    adjust,
    give_back,
    lease,
    lease_seconds,
    stamp,
    take,
)

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


# Leases: units lent are logged at the stamp of the lease's end and spent any time before it;
# what is not spent comes off that entry again. No interval of the window admits more.
LEASE_OPS = st.lists(st.tuples(st.sampled_from(["take", "lease", "spend", "spend", "close"]),
                               st.sampled_from([0.0, 0.0, 0.05, 0.3, 0.9, 2.0]), st.integers(0, 3),
                               st.integers(1, 6)), max_size=100)


@settings(max_examples=400, deadline=None)
@given(limits, st.sampled_from([3.0, 10.0, 60.0]), LEASE_OPS)
def test_leases_never_let_a_sliding_log_pass_its_limit(limit, window, ops):
    life = lease_seconds(window, 2.0)
    log, now, admitted = None, 500.0, []
    leases = []  # [until, left, ends]
    for kind, gap, pick, size in ops:
        now += gap
        spendable = [x for x in leases if x[2] > now and x[1] >= 1]
        if kind == "take":
            decision = take(log, now, limit, window, 1.0)
            log = decision.log
            if decision.allowed:
                admitted.append(now)
        elif kind == "lease":
            peek = take(log, now, limit, window, 0.0)
            units = min(size, int(limit - peek.used + 1e-9))
            if units >= 1:
                log = lease(peek.log, now, window, now + life, units)
                leases.append([now + life, units, now + life])
        elif kind == "spend" and spendable:
            spendable[pick % len(spendable)][1] -= 1
            admitted.append(now)
        elif kind == "close" and leases:
            until, left, _ = leases.pop(pick % len(leases))
            log = give_back(log, now, window, until, left) or log
    for i, start in enumerate(admitted):
        assert sum(1 for t in admitted[i:] if t < start + window) <= limit


def test_units_spent_late_from_a_lease_stay_in_the_log_a_whole_window():
    life = lease_seconds(10.0, 2.0)
    log = lease(take(None, 0.0, 4, 10.0, 0.0).log, 0.0, 10.0, 0.0 + life, 4)  # all 4 lent at t=0
    # Spent at 0.4 (inside the lease): a window later they still count, until 0.4 + 10 has passed.
    assert not take(log, 10.1, 4, 10.0, 1.0).allowed
    assert take(log, 10.0 + life + 10.0 / BUCKETS, 4, 10.0, 4.0).allowed
    back = give_back(log, 0.2, 10.0, 0.0 + life, 3)  # 1 spent, 3 back
    assert take(back, 0.2, 4, 10.0, 3.0).allowed and not take(back, 0.2, 4, 10.0, 4.0).allowed
