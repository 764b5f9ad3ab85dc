"""Settings for retries, deadlines, circuit breakers and health probes (flat variables)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from .._variables import set_fields

# variable -> field of ResiliencePolicy
_VARS = {
    "UPSTREAM_MAX_ATTEMPTS": "max_attempts",
    "UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS": "first_byte_timeout_seconds",
    "UPSTREAM_STREAM_IDLE_TIMEOUT_SECONDS": "stream_idle_timeout_seconds",
    "UPSTREAM_DEADLINE_SECONDS": "deadline_seconds",
    "RETRY_BACKOFF_BASE_SECONDS": "backoff_base_seconds",
    "RETRY_BACKOFF_MAX_SECONDS": "backoff_max_seconds",
    "CIRCUIT_FAILURE_THRESHOLD": "circuit_failure_threshold",
    "CIRCUIT_COOLDOWN_SECONDS": "circuit_cooldown_seconds",
    "CIRCUIT_HALF_OPEN_SUCCESSES": "circuit_half_open_successes",
    "HEALTH_PROBE_INTERVAL_SECONDS": "probe_interval_seconds",
    "HEALTH_EWMA_ALPHA": "ewma_alpha",
}
RESILIENCE_VARS = tuple(_VARS)


class ResiliencePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Attempts in all, across the route's targets (a first pass over the targets, then
    # retries with backoff), bounded by the deadline.
    max_attempts: int = Field(default=4, ge=1, le=20)
    # Time to the response headers (and, for streams, the first event). None: the attempt timeout.
    first_byte_timeout_seconds: PositiveFloat | None = None
    # Longest silence allowed between two chunks of a stream. None: the attempt timeout.
    stream_idle_timeout_seconds: PositiveFloat | None = None
    # Until the response starts (whole body for non-streaming), over all attempts and waits.
    deadline_seconds: PositiveFloat = 120.0
    backoff_base_seconds: float = Field(default=0.25, ge=0)
    backoff_max_seconds: float = Field(default=4.0, ge=0)
    circuit_failure_threshold: int = Field(default=5, ge=1)  # consecutive failures that open it
    circuit_cooldown_seconds: PositiveFloat = 30.0  # open -> half-open after this long
    circuit_half_open_successes: int = Field(default=1, ge=1)  # trial successes that close it
    probe_interval_seconds: float = Field(default=0.0, ge=0)  # 0: no active probes
    ewma_alpha: float = Field(default=0.3, gt=0, le=1)  # weight of the newest latency sample


def resilience_from_vars(vars: Mapping[str, str]) -> dict[str, Any]:
    return set_fields(vars, _VARS)
