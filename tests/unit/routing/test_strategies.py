"""Routing strategies rank targets as documented."""

import random
from collections import Counter
from types import SimpleNamespace

from flaregate.routing.health import TargetHealth
from flaregate.routing.strategies import estimate_tokens, load_balance_score, rank


def targets(*specs):
    return [SimpleNamespace(weight=w, price_in=pi, price_out=po) for w, pi, po in specs]


def healths(n, **fields):
    out = [TargetHealth("p", str(i)) for i in range(n)]
    for name, values in fields.items():
        for h, v in zip(out, values, strict=True):
            setattr(h, name, v)
    return out


def test_fallback_keeps_the_configured_order():
    ts = targets((1, None, None), (5, None, None), (1, None, None))
    assert rank("fallback", ts, healths(3), stream=False, body={}, rng=random.Random(1)) == [0, 1, 2]


def test_weighted_draws_first_choices_in_proportion_and_never_zero_weight_first():
    ts = targets((3, None, None), (1, None, None), (0, None, None))
    rng = random.Random(42)
    firsts = Counter(rank("weighted", ts, healths(3), stream=False, body={}, rng=rng)[0] for _ in range(4000))
    assert firsts[2] == 0
    assert 2.6 < firsts[0] / firsts[1] < 3.4  # 3:1 within sampling noise (fixed seed)
    order = rank("weighted", ts, healths(3), stream=False, body={}, rng=rng)
    assert sorted(order) == [0, 1, 2] and order[-1] == 2  # zero weight: last-resort fallback only


def test_latency_prefers_unmeasured_then_fastest_and_uses_ttft_for_streams():
    ts = targets(*[(1, None, None)] * 3)
    hs = healths(3, latency_ms=[300.0, 100.0, None], ttft_ms=[10.0, 90.0, None])
    assert rank("latency", ts, hs, stream=False, body={}, rng=random.Random()) == [2, 1, 0]
    assert rank("latency", ts, hs, stream=True, body={}, rng=random.Random()) == [2, 0, 1]


def test_least_busy_orders_by_in_flight():
    ts = targets(*[(1, None, None)] * 3)
    hs = healths(3, in_flight=[4, 0, 2])
    assert rank("least_busy", ts, hs, stream=False, body={}, rng=random.Random()) == [1, 2, 0]


def test_cost_uses_input_and_output_prices_and_puts_unpriced_last():
    # Cheap input but dear output loses when the request asks for many output tokens.
    ts = targets((1, 0.1, 10.0), (1, 1.0, 1.0), (1, None, None))
    long_answer = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000}
    short_answer = {"messages": [{"role": "user", "content": "x" * 40000}], "max_tokens": 1}
    assert rank("cost", ts, healths(3), stream=False, body=long_answer, rng=random.Random()) == [1, 0, 2]
    assert rank("cost", ts, healths(3), stream=False, body=short_answer, rng=random.Random()) == [0, 1, 2]
    assert estimate_tokens(long_answer)[1] == 4000


def test_score_is_the_seed_formula():
    h = TargetHealth("p", "m", success_rate=0.9, in_flight=3, latency_ms=250.0)
    assert load_balance_score(h) == 0.9 * 100 - 3 * 2 + (1000 - 250)
    slow = TargetHealth("p", "slow", success_rate=1.0, latency_ms=2500.0)
    assert load_balance_score(slow) == 100
    ts = targets(*[(1, None, None)] * 2)
    assert rank("score", ts, [slow, h], stream=False, body={}, rng=random.Random()) == [1, 0]


def test_performance_strategies_rank_recently_failed_targets_last():
    ts = targets(*[(1, 1.0, 1.0)] * 3)
    hs = healths(3, latency_ms=[None, 50.0, 10.0], in_flight=[0, 1, 2])
    for strategy in ("latency", "least_busy", "cost", "score"):
        order = rank(strategy, ts, hs, stream=False, body={}, rng=random.Random(), penalized=frozenset({0}))
        assert order[-1] == 0, strategy
    assert rank("fallback", ts, hs, stream=False, body={}, rng=random.Random(), penalized=frozenset({0}))[0] == 0
