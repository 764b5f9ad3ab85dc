"""The rate-limiter object over real SQL (in-memory sqlite3) with a fake clock."""

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaregate.ratelimits import limiter as limiter_module
from flaregate.ratelimits.limiter import (
    LEASE_SECONDS,
    LEASE_SHARE,
    MAX_CHECKS,
    SWEEP_EVERY,
    PolicyError,
    RateLimiter,
)
from tests.support.fakes import FakeClock, MemorySql

POLICY = {"algorithm": "token_bucket", "capacity": 5, "refill_per_second": 0.5}
BUCKET = {"name": "b", "algorithm": "token_bucket", "limit": 5, "refill_per_second": 0.5}
SLIDING = {"name": "s", "algorithm": "sliding_window", "limit": 3, "window_seconds": 60}
FIXED = {"name": "f", "algorithm": "fixed_window", "limit": 2, "window_seconds": 10}
TOKENS = {"name": "t", "algorithm": "fixed_window", "unit": "tokens", "limit": 1000, "window_seconds": 3600}
BUDGET = {"name": "d", "algorithm": "fixed_window", "unit": "usd", "limit": 0.5, "calendar": "month"}


def test_sixth_request_is_refused_with_retry_after():
    limiter = RateLimiter(MemorySql(), FakeClock())
    decisions = [limiter.check("key:a", POLICY) for _ in range(6)]
    assert [d["allowed"] for d in decisions] == [True] * 5 + [False]
    assert [d["remaining"] for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert decisions[-1]["retry_after_seconds"] == 2.0
    assert decisions[-1]["limit"] == 5


def test_keys_are_independent_and_state_survives_a_new_instance():
    sql, clock = MemorySql(), FakeClock()
    first = RateLimiter(sql, clock)
    for _ in range(5):
        first.check("key:a", POLICY)
    second = RateLimiter(sql, clock)  # e.g. a Durable Object woken again, or a restart
    assert not second.check("key:a", POLICY)["allowed"]
    assert second.check("key:b", POLICY)["allowed"]
    clock.advance(2.0)
    assert second.check("key:a", POLICY)["allowed"]


def test_acquire_is_all_or_nothing():
    limiter = RateLimiter(MemorySql(), FakeClock())
    checks = [{"key": "f", "policy": FIXED, "cost": 1}, {"key": "b", "policy": BUCKET, "cost": 1}]
    assert [limiter.acquire(checks)["allowed"] for _ in range(3)] == [True, True, False]
    refused = limiter.acquire(checks)
    assert [r["allowed"] for r in refused["results"]] == [False, True]
    # The bucket gave nothing for the refused requests: 2 taken, 3 left.
    assert limiter.acquire([{"key": "b", "policy": BUCKET, "cost": 1}])["results"][0]["remaining"] == 2


def test_reconcile_charges_the_real_usage_in_the_reserving_window():
    clock = FakeClock()
    limiter = RateLimiter(MemorySql(), clock)
    reserved = limiter.acquire([{"key": "t", "policy": TOKENS, "cost": 300}])
    assert reserved["results"][0]["remaining"] == 700
    clock.advance(2)
    settled = limiter.reconcile([{"key": "t", "policy": TOKENS, "delta": 42 - 300, "at": reserved["at"]}])
    assert settled["results"][0]["remaining"] == 958 and settled["results"][0]["used"] == 42
    over = limiter.reconcile([{"key": "t", "policy": TOKENS, "delta": 2000, "at": reserved["at"]}])
    assert over["results"][0]["remaining"] == 0  # charged, never refused: it was already spent
    assert not limiter.acquire([{"key": "t", "policy": TOKENS, "cost": 1}])["allowed"]


def test_a_request_bigger_than_the_limit_says_so():
    limiter = RateLimiter(MemorySql(), FakeClock())
    result = limiter.acquire([{"key": "t", "policy": TOKENS, "cost": 5000}])["results"][0]
    assert not result["allowed"] and result["exceeds_limit"]


def test_usd_budget_counts_fractions_per_calendar_month():
    limiter = RateLimiter(MemorySql(), FakeClock())
    for _ in range(4):
        assert limiter.acquire([{"key": "d", "policy": BUDGET, "cost": 0.125}])["allowed"]
    result = limiter.acquire([{"key": "d", "policy": BUDGET, "cost": 0.001}])["results"][0]
    assert not result["allowed"] and result["used"] == 0.5 and result["remaining"] == 0.0
    assert 0 < result["retry_after_seconds"] <= 31 * 86400


def test_usage_and_reset_per_partition_and_policy():
    sql, clock = MemorySql(), FakeClock()
    root = RateLimiter(sql, clock)
    a, b = root.partition("key:a"), root.partition("key:b")
    for limiter in (a, b):
        limiter.acquire([{"key": "f", "policy": FIXED, "cost": 1}, {"key": "s|model:x", "policy": SLIDING, "cost": 1}])
    usage = a.usage()["limits"]
    assert [(u["key"], u["policy"], u["used"], u["remaining"]) for u in usage] == [("f", "f", 1, 1), ("s|model:x", "s", 1, 2)]
    assert a.reset("s") == {"reset": 1}
    assert [u["key"] for u in a.usage()["limits"]] == ["f"]
    assert a.reset() == {"reset": 1} and a.usage()["limits"] == []
    assert len(b.usage()["limits"]) == 2  # another partition is untouched


def test_rows_back_to_their_fresh_state_are_swept():
    sql, clock = MemorySql(), FakeClock()
    limiter = RateLimiter(sql, clock)
    for i in range(SWEEP_EVERY - 1):
        limiter.check(f"k{i}", FIXED)
    clock.advance(3600)
    limiter.check("last", FIXED)  # the SWEEP_EVERY-th write sweeps the expired rows
    assert [r["key"] for r in sql.exec("SELECT key FROM rl_state")] == ["last"]


class CountingSql(MemorySql):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def exec(self, sql, *params):
        self.reads += sql.startswith("SELECT")
        return super().exec(sql, *params)


def test_a_row_is_read_from_sql_once_then_from_memory(monkeypatch):
    sql, clock = CountingSql(), FakeClock()
    limiter = RateLimiter(sql, clock)
    assert [limiter.check("key:a", POLICY)["remaining"] for _ in range(5)] == [4, 3, 2, 1, 0]
    assert sql.reads == 1  # the first request found no row; every later one its copy
    RateLimiter(sql, clock).check("key:a", POLICY)  # a new instance reads what SQL holds
    assert sql.reads == 2
    assert limiter.reset("")["reset"] == 1
    assert limiter.check("key:a", POLICY)["remaining"] == 4  # the copy went with the rows
    monkeypatch.setattr(limiter_module, "CACHED_ROWS", 3)
    bounded = RateLimiter(CountingSql(), clock)
    for key in ["a", "b", "c", "d", "a"]:
        bounded.check(key, POLICY)
    assert len(bounded._rows._cached) <= 3
    assert bounded.check("a", POLICY)["remaining"] == 2  # a's two requests, read again after the copy emptied


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        ([{"key": "k", "policy": {**FIXED, "algorithm": "leaky"}}], "algorithm"),
        ([{"key": "k", "policy": {**FIXED, "limit": 0}}], "limit"),
        ([{"key": "k", "policy": {**FIXED, "window_seconds": -1}}], "window_seconds"),
        ([{"key": "k", "policy": {**BUCKET, "refill_per_second": None}}], "refill_per_second"),
        ([{"key": "k", "policy": FIXED, "cost": -1}], "cost"),
        ([{"key": "k", "policy": FIXED, "cost": float("nan")}], "cost"),
        ([{"key": "", "policy": FIXED}], "key"),
        ([{"key": "k", "policy": FIXED}] * (MAX_CHECKS + 1), "list"),
        ([{"key": "k", "policy": FIXED, "lease": -1}], "lease"),
        ([{"key": "k", "policy": FIXED, "lease": True}], "lease"),
        ([{"key": "k", "policy": FIXED, "back": 2, "back_at": "yesterday"}], "back_at"),
        ([{"key": "k", "policy": FIXED, "back": -2, "back_at": 1.0}], "back"),
        ("not a list", "list"),
    ],
)
def test_nonsense_over_rpc_is_refused_naming_the_problem(checks, message):
    with pytest.raises(PolicyError, match=message):
        RateLimiter(MemorySql(), FakeClock()).acquire(checks)


# -- leases ----------------------------------------------------------------------------------
RPM = {"name": "r", "algorithm": "fixed_window", "limit": 1000, "window_seconds": 60}


def test_a_lease_is_a_share_of_what_is_left_and_the_same_requests_worth_in_every_row():
    limiter = RateLimiter(MemorySql(), FakeClock())
    answer = limiter.acquire([{"key": "r", "policy": RPM, "cost": 1, "lease": 50},
                              {"key": "t", "policy": TOKENS, "cost": 100, "lease": 50}])
    # Tokens bind: after this request 900 left, a quarter is 225, so two requests' worth.
    assert answer["allowed"] and answer["lease"] == 2
    assert [r["leased"] for r in answer["results"]] == [2, 200]
    assert [r["remaining"] for r in answer["results"]] == [997, 700]
    assert all(r["lease_seconds"] == LEASE_SECONDS for r in answer["results"])
    small = limiter.acquire([{"key": "r", "policy": RPM, "cost": 1, "lease": 5}])
    assert small["lease"] == 5  # never more than asked


def test_near_the_limit_nothing_is_lent_and_a_refusal_lends_nothing():
    limiter = RateLimiter(MemorySql(), FakeClock())
    tight = {**FIXED, "limit": 6}
    first = limiter.acquire([{"key": "f", "policy": tight, "cost": 1, "lease": 100}])
    assert first["lease"] == 1  # 5 left after it: a quarter is one request
    for _ in range(LEASE_SHARE - 1):
        answer = limiter.acquire([{"key": "f", "policy": tight, "cost": 1, "lease": 100}])
        assert answer["allowed"] and answer["lease"] == 0  # fewer than LEASE_SHARE left: units one at a time
    refused = limiter.acquire([{"key": "f", "policy": tight, "cost": 2, "lease": 100}])
    assert not refused["allowed"] and refused["lease"] == 0 and refused["results"][0]["remaining"] == 1


def test_a_fixed_windows_lease_never_outlasts_its_window():
    clock = FakeClock()
    clock.advance(9.5)  # half a second of the 10 s window left
    answer = RateLimiter(MemorySql(), clock).acquire([{"key": "f", "policy": {**RPM, "window_seconds": 10},
                                                      "cost": 1, "lease": 10}])
    assert answer["lease"] == 10 and answer["results"][0]["lease_seconds"] == 0.5


def test_a_give_back_counts_even_in_a_call_that_is_refused():
    limiter = RateLimiter(MemorySql(), FakeClock())
    limiter.acquire([{"key": "f", "policy": FIXED, "cost": 2}])  # the window's 2: all taken
    lent = limiter.acquire([{"key": "t", "policy": TOKENS, "cost": 10, "lease": 10}])
    back = {"key": "t", "policy": TOKENS, "cost": 0, "back": 100, "lent": 100, "back_at": lent["at"]}
    refused = limiter.acquire([{"key": "f", "policy": FIXED, "cost": 1}, back])
    assert not refused["allowed"]
    assert refused["results"][1]["remaining"] == 1000 - 10 - 100 + 100  # the lease's 100 came back
    assert not any("leased" in r for r in refused["results"])


# -- the edge Durable Object's SQL versus the local sqlite3 file -------------------------
class JsRow(dict):
    """A row as Durable Object SQL hands it to Python (a JsDict: attribute access too)."""

    __getattr__ = dict.__getitem__


class DurableObjectSql:
    """``ctx.storage.sql`` as the edge forwarder sees it: its own database, rows as JsDicts,
    and numbers as JavaScript has them (an integral REAL comes back as a Python int)."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", isolation_level=None)

    def exec(self, sql, *params):
        cursor = self.db.execute(sql, params)
        names = [c[0] for c in cursor.description or ()]
        as_js = [[int(v) if isinstance(v, float) and v.is_integer() else v for v in row] for row in cursor]
        return [JsRow(zip(names, row, strict=True)) for row in as_js]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.sampled_from(["b", "s", "f", "t", "d"]), st.integers(0, 400)),
        st.tuples(st.just("reconcile"), st.sampled_from(["t", "d", "s"]), st.integers(-300, 300)),
        st.tuples(st.just("give back"), st.sampled_from(["b", "s", "f", "t"]), st.integers(0, 400)),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1, 7, 59, 3600]), st.just(0)),
        st.tuples(st.just("usage"), st.just(""), st.just(0)),
        st.tuples(st.just("reset"), st.sampled_from(["", "b", "t"]), st.just(0)),
    ),
    max_size=60,
)
POLICIES = {"b": BUCKET, "s": SLIDING, "f": FIXED, "t": TOKENS, "d": BUDGET}


@settings(max_examples=150, deadline=None)
@given(operations)
def test_the_edge_object_and_the_local_object_decide_the_same(ops):
    clock = FakeClock()
    edge = RateLimiter(DurableObjectSql(), clock)  # one Durable Object = one partition
    local = RateLimiter(MemorySql(), clock).partition("key:key_0123456789abcdef")
    last_at = clock.now()
    for op, arg, amount in ops:
        if op == "advance":
            clock.advance(arg)
            continue
        if op == "acquire":
            policy = POLICIES[arg]
            cost = amount / 1000 if policy.get("unit") == "usd" else amount % 7
            call = ("acquire", [{"key": arg, "policy": policy, "cost": cost, "lease": amount % 5}])
        elif op == "give back":
            call = ("acquire", [{"key": arg, "policy": POLICIES[arg], "cost": 0, "back": amount % 4,
                                 "lent": amount % 9, "back_at": last_at}])
        elif op == "reconcile":
            call = ("reconcile", [{"key": arg, "policy": POLICIES[arg], "delta": amount, "at": last_at}])
        elif op == "usage":
            call = ("usage",)
        else:
            call = ("reset", arg)
        from_edge = getattr(edge, call[0])(*call[1:])
        from_local = getattr(local, call[0])(*call[1:])
        assert from_edge == from_local, call
        last_at = from_edge.get("at", last_at)
