"""The health score: one number from 0 to 100, with a formula an operator can check by hand.

Over the last ``HEALTH_WINDOW_SECONDS`` (for the gateway, or for one provider):

* ``failure_rate`` f = server-side failures / requests. Server-side failures are the ones
  the gateway or a provider caused (upstream timeout, unreachable, 5xx, 429, a broken
  stream, an internal error); client mistakes (400, 401, 404, ...) and the gateway's own
  rate-limit rejections are the system working and do not count.
* ``error`` E = max(0, 1 - f / 0.10): 1 with no failures, 0 at 10 % failures or more.
* ``latency`` L = min(1, target / p95), where p95 is the 95th percentile of the time until
  the client gets its answer (time to first token for streams, total time otherwise) and
  target is ``HEALTH_LATENCY_TARGET_MS``: 1 within target, 0.5 at twice the target.
* ``availability`` A = successful upstream attempts / upstream attempts (failed attempts
  that failover hid from the client still count here).

``score = round(100 * (0.5 E + 0.25 L + 0.25 A))``; no traffic scores 100.
Status: ``healthy`` >= 90, ``degraded`` >= 60, ``unhealthy`` below.
"""

from __future__ import annotations

from typing import Any

HEALTH_WINDOW_SECONDS = 300
FAILURE_RATE_AT_ZERO = 0.10
WEIGHTS = {"error": 0.5, "latency": 0.25, "availability": 0.25}
HEALTHY_AT = 90
DEGRADED_AT = 60


def status_for(score: int) -> str:
    if score >= HEALTHY_AT:
        return "healthy"
    return "degraded" if score >= DEGRADED_AT else "unhealthy"


def health_score(
    requests: int,
    failures: int,
    p95_ms: float | None,
    target_ms: float,
    attempts: int,
    attempt_failures: int,
) -> dict[str, Any]:
    failure_rate = failures / requests if requests else 0.0
    availability = (attempts - attempt_failures) / attempts if attempts else 1.0
    components = {
        "error": max(0.0, 1.0 - failure_rate / FAILURE_RATE_AT_ZERO),
        "latency": min(1.0, target_ms / p95_ms) if p95_ms else 1.0,
        "availability": max(0.0, availability),
    }
    score = round(100 * sum(WEIGHTS[name] * value for name, value in components.items()))
    return {
        "score": score,
        "status": status_for(score),
        "window_s": HEALTH_WINDOW_SECONDS,
        "requests": requests,
        "failure_rate": round(failure_rate, 4),
        "p95_ms": p95_ms,
        "target_ms": target_ms,
        "availability": round(availability, 4),
        "components": {name: round(value, 4) for name, value in components.items()},
    }
