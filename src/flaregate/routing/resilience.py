"""Settings for retries, deadlines, circuit breakers, health probes and what an upstream
answer may send (flat variables)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from .._variables import set_fields
from ..ports import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_STREAM_BYTES,
    DEFAULT_SINGLE_FLIGHT_MAX_BYTES,
    MAX_EVENT_BYTES_CEILING,
    UpstreamLimits,
)

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
    "UPSTREAM_MAX_EVENT_BYTES": "max_event_bytes",
    "UPSTREAM_MAX_RESPONSE_BYTES": "max_response_bytes",
    "UPSTREAM_MAX_STREAM_BYTES": "max_stream_bytes",
    "SINGLE_FLIGHT_MAX_BYTES": "single_flight_max_bytes",
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
    # What one upstream answer may send: a hostile or broken upstream must not exhaust an
    # isolate's 128 MB (a Python Worker starts near 40 MB of it). Past a cap the answer
    # fails with a clear error: 502 upstream_response_too_large for a whole body; for a
    # stream, its error event (upstream_event_too_large, upstream_stream_too_large).
    # One SSE line or event: chat and Messages events are a few hundred bytes, a Responses
    # image event or a response.completed that repeats a long answer a few MB. A stream's
    # parsers hold a few copies of one event at most, so a hostile one costs ~10 MB.
    max_event_bytes: int = Field(default=DEFAULT_MAX_EVENT_BYTES, ge=1024, le=MAX_EVENT_BYTES_CEILING)
    # One whole (non-streamed) body, which is held, parsed and maybe re-serialised: ~4x
    # its size at the peak, so 16 MiB stays under the isolate's limit (a 128k-token answer
    # is ~0.5 MB; a large embeddings batch several MB).
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, ge=1024)
    # One stream, all of it (passed on, not held): ends a never-ending stream. 64 MiB is
    # twice the SSE of a 128k-token answer (~30 MB of chat chunks).
    max_stream_bytes: int = Field(default=DEFAULT_MAX_STREAM_BYTES, ge=1024)
    # What one single-flight keeps of its stream for the requests that join it late (they
    # replay it from the start). Past it the flight takes no one new and keeps only what
    # its slowest reader has yet to read; a reader that falls further behind is cut off.
    single_flight_max_bytes: int = Field(default=DEFAULT_SINGLE_FLIGHT_MAX_BYTES, ge=0)

    @property
    def limits(self) -> UpstreamLimits:
        return UpstreamLimits(self.max_event_bytes, self.max_stream_bytes, self.max_response_bytes)


def resilience_from_vars(vars: Mapping[str, str]) -> dict[str, str]:
    return set_fields(vars, _VARS)
