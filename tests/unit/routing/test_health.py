"""Circuit breaker, cooldowns and Retry-After parsing, on a fake clock."""

import pytest

from flaregate.routing.health import CLOSED, HALF_OPEN, OPEN, HealthRegistry, parse_retry_after
from flaregate.routing.resilience import ResiliencePolicy
from tests.support.fakes import FakeClock


def registry(**policy):
    clock = FakeClock()
    events = []
    return HealthRegistry(ResiliencePolicy(**policy), clock, events.append), clock, events


def fail(reg, h, **kw):
    reg.acquire(h)
    reg.failure(h, "status", "HTTP 503", 503, **kw)
    reg.release(h)


def test_circuit_opens_half_opens_and_closes():
    reg, clock, events = registry(circuit_failure_threshold=3, circuit_cooldown_seconds=10)
    h = reg.get("a", "m")
    for _ in range(2):
        fail(reg, h)
    assert h.state == CLOSED and reg.circuit_wait(h) == 0
    fail(reg, h)
    assert h.state == OPEN and reg.circuit_wait(h) == 10
    clock.advance(4)
    assert reg.circuit_wait(h) == 6
    clock.advance(6)
    assert reg.circuit_wait(h) == 0
    reg.acquire(h)  # the trial request
    assert h.state == HALF_OPEN
    assert reg.circuit_wait(h) > 0  # one trial at a time
    reg.success(h, 12.0)
    reg.release(h)
    assert h.state == CLOSED and h.consecutive_failures == 0
    assert [(e["type"], e["from"], e["to"]) for e in events] == [
        ("circuit", CLOSED, OPEN), ("circuit", OPEN, HALF_OPEN), ("circuit", HALF_OPEN, CLOSED)]
    assert events[0]["target"] == "a/m" and "3 consecutive failures" in events[0]["reason"]


def test_a_failed_trial_opens_the_circuit_again():
    reg, clock, events = registry(circuit_failure_threshold=1, circuit_cooldown_seconds=5)
    h = reg.get("a", "m")
    fail(reg, h)
    clock.advance(5)
    fail(reg, h)
    assert h.state == OPEN and h.circuit_opens == 2 and reg.circuit_wait(h) == 5
    assert [e["to"] for e in events] == [OPEN, HALF_OPEN, OPEN]


def test_success_between_failures_resets_the_count():
    reg, _, _ = registry(circuit_failure_threshold=2)
    h = reg.get("a", "m")
    fail(reg, h)
    reg.success(h, 5.0)
    fail(reg, h)
    assert h.state == CLOSED


def test_retry_after_cooldown_is_extended_never_shortened():
    reg, clock, events = registry()
    h = reg.get("a", "m")
    fail(reg, h, retry_after=(30.0, "retry-after"))
    fail(reg, h, retry_after=(5.0, "retry-after-ms"))
    assert reg.cooldown_wait(h) == 30
    clock.advance(10)
    fail(reg, h, retry_after=(40.0, "retry-after"))
    assert reg.cooldown_wait(h) == 40
    assert [e["seconds"] for e in events if e["type"] == "cooldown"] == [30.0, 40.0]


def test_latency_ewma_and_report():
    reg, _, _ = registry(ewma_alpha=0.5)
    h = reg.get("a", "m")
    reg.success(h, 100.0)
    reg.success(h, 200.0, ttft_ms=20.0)
    report = reg.report(h)
    assert report["latency_ewma_ms"] == 150.0 and report["ttft_ewma_ms"] == 20.0
    assert report["circuit"] == CLOSED and report["available"] is True


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, (7.0, "retry-after")),
        ({"retry-after": "1.5"}, (1.5, "retry-after")),
        ({"retry-after-ms": "250"}, (0.25, "retry-after-ms")),
        ({"x-ms-retry-after-ms": "1000", "retry-after": "9"}, (1.0, "x-ms-retry-after-ms")),
        ({"retry-after": "Fri, 27 Nov 2026 14:00:10 GMT"}, (10.0, "retry-after")),
        ({"retry-after": "Fri, 27 Nov 2026 13:00:00 GMT"}, (0.0, "retry-after")),
        ({"retry-after": "999999999"}, (3600.0, "retry-after")),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "nan"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers, expected):
    now = 1_795_788_000.0  # Fri, 27 Nov 2026 14:00:00 GMT
    assert parse_retry_after(headers, now) == expected


class Probed:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0

    async def probe(self, timeout):
        self.calls += 1
        return self.answers.pop(0)


async def test_active_probes_recover_open_circuits_only():
    from flaregate.config import settings_from_vars
    from flaregate.routing.probes import HealthProber
    from flaregate.routing.upstream_call import UpstreamCaller

    clock = FakeClock()
    events = []
    settings = settings_from_vars({"CIRCUIT_FAILURE_THRESHOLD": "1", "CIRCUIT_COOLDOWN_SECONDS": "10"})
    caller = UpstreamCaller(settings, clock, events.append)
    healthy, sick = caller.health.get("ok", "m"), caller.health.get("down", "m")
    providers = {"ok": Probed([]), "down": Probed([False, True])}
    prober = HealthProber(caller, providers)
    fail(caller.health, sick)
    assert await prober.run_once() == 0  # still inside the cooldown: nothing to probe
    clock.advance(10)
    assert await prober.run_once() == 1  # the failed probe opens it for another cooldown
    assert sick.state == OPEN and caller.health.circuit_wait(sick) == 10
    clock.advance(10)
    await prober.run_once()
    assert sick.state == CLOSED and healthy.state == CLOSED
    assert providers["ok"].calls == 0  # closed circuits are never probed
    assert [e["to"] for e in events if e["type"] == "circuit"] == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]
