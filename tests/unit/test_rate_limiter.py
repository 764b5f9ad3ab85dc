from flaregate.objects.rate_limiter import RateLimiter
from tests.support.fakes import FakeClock, MemorySql

POLICY = {"algorithm": "token_bucket", "capacity": 5, "refill_per_second": 0.5}


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
