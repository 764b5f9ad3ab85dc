"""Token-bucket invariants with a fake clock (hypothesis)."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from flaregate.ratelimits.algorithms.token_bucket import adjust, give_back, grid, lease, take

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


# Leases: units lent out are spent later, within the lease's life, and what is not spent
# comes back when it ends. Over any interval the spends and plain takes together never pass
# capacity + rate x interval: the bucket refills only up to capacity less what is held.
LEASE_OPS = st.lists(st.tuples(st.sampled_from(["take", "lease", "spend", "spend", "close"]),
                               st.sampled_from([0.0, 0.0, 0.1, 0.5, 0.9, 1.5]), st.integers(0, 3), st.integers(1, 12)),
                     max_size=100)


@settings(max_examples=400, deadline=None)
@given(capacities, rates, LEASE_OPS)
def test_leases_never_let_a_bucket_pass_capacity_plus_refill(capacity, rate, ops):
    life, hold = 1.0, 2.0  # a lease is spent for at most `life`; the bucket holds it `hold`
    state, now, admitted = take(None, 0.0, capacity, rate, 0.0).state, 0.0, []
    leases = []  # [until, left, lent, ends]
    for kind, gap, pick, size in ops:
        now += gap
        live = [lease_ for lease_ in leases if lease_[3] > now]
        if kind == "take":
            decision = take(state, now, capacity, rate, 1.0)
            state = decision.state
            if decision.allowed:
                admitted.append(now)
        elif kind == "lease":
            state = take(state, now, capacity, rate, 0.0).state
            units = min(size, math.floor(state.tokens))
            if units >= 1:
                until = grid(now + hold, 0.25)
                state = lease(state, units, until)
                leases.append([until, units, units, now + life])
        elif kind == "spend" and [x for x in live if x[1] >= 1]:
            chosen = [x for x in live if x[1] >= 1][pick % len([x for x in live if x[1] >= 1])]
            chosen[1] -= 1
            admitted.append(now)
        elif kind == "close" and leases:
            until, left, lent, _ = leases.pop(pick % len(leases))
            state = give_back(state, now, capacity, rate, until, left, lent)
        assert state.tokens <= capacity + 1e-9
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= capacity + rate * (admitted[j] - start) + 1e-9


def test_a_bucket_holding_a_lease_refills_only_to_capacity_less_it():
    state = lease(take(None, 0.0, 10, 1.0, 4.0).state, 6.0, 5.0)  # 4 spent, 6 lent until t=5
    assert take(state, 4.5, 10, 1.0, 0.0).state.tokens == 4.0  # 0 + 4.5 s, capped at 10 - 6
    assert take(state, 8.0, 10, 1.0, 0.0).state.tokens == 7.0  # the hold ended at 5: refilling since
    back = give_back(state, 1.0, 10, 1.0, 5.0, units=2.0, lent=6.0)  # 4 spent, 2 back: nothing held
    assert back.tokens == 3.0 and back.held == ()
    assert give_back(state, 5.5, 10, 1.0, 5.0, units=2.0, lent=6.0).tokens == 4.5  # too late: stay spent
