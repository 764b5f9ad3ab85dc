"""Token-bucket invariants with a fake clock (hypothesis)."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from flaregate.ratelimits.algorithms.token_bucket import adjust, take

capacities = st.integers(min_value=1, max_value=50).map(float)
rates = st.sampled_from([0.25, 0.5, 1.0, 2.0, 10.0])
gaps = st.lists(st.floats(min_value=0, max_value=3, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(capacities, rates, gaps)
def test_no_window_admits_more_than_capacity_plus_refill(capacity, rate, steps):
    state, now, admitted_at = None, 0.0, []
    for gap in steps:
        now += gap
        decision = take(state, now, capacity, rate, 1.0)
        state = decision.state
        if decision.allowed:
            admitted_at.append(now)
    # In every window [a, b] at most capacity + rate * (b - a) requests get through.
    for i, start in enumerate(admitted_at):
        for j in range(i, len(admitted_at)):
            count = j - i + 1
            assert count <= capacity + rate * (admitted_at[j] - start) + 1e-9


@given(capacities, rates)
def test_full_bucket_admits_exactly_its_capacity_in_a_burst(capacity, rate):
    state, admitted = None, 0
    for _ in range(int(capacity) + 5):
        decision = take(state, 100.0, capacity, rate, 1.0)
        state = decision.state
        admitted += decision.allowed
    assert admitted == capacity
    assert not decision.allowed and math.isclose(decision.retry_after, 1 / rate)


@given(capacities, rates, st.integers(min_value=1, max_value=20))
def test_refill_matches_the_rate(capacity, rate, k):
    state = None
    for _ in range(int(capacity)):
        state = take(state, 0.0, capacity, rate, 1.0).state
    later = k / rate + 1e-6
    admitted = 0
    for _ in range(k + int(capacity) + 2):
        decision = take(state, later, capacity, rate, 1.0)
        state = decision.state
        admitted += decision.allowed
    assert admitted == min(k, int(capacity))


def test_clock_stepping_backwards_refills_nothing():
    state = None
    for _ in range(3):
        state = take(state, 50.0, 3.0, 1.0, 1.0).state
    assert not take(state, 10.0, 3.0, 1.0, 1.0).allowed
    assert take(state, 10.0, 3.0, 1.0, 1.0).state.updated_at == 50.0


def test_adjust_charges_real_usage_and_refunds_without_overfilling():
    state = take(None, 0.0, 100.0, 1.0, 40.0).state  # reserved 40
    assert adjust(state, 0.0, 100.0, 1.0, -30.0).tokens == 90.0  # used 10: 30 back
    debt = adjust(state, 0.0, 100.0, 1.0, 80.0)  # used 120 in the end: a debt
    assert debt.tokens == -20.0
    assert take(debt, 20.0, 100.0, 1.0, 1.0).retry_after == 1.0  # the debt is waited out
    assert adjust(state, 0.0, 100.0, 1.0, -1000.0).tokens == 100.0  # never above capacity
