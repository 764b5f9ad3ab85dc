"""Ports: the small protocols through which the core reaches the outside world.

Each host (edge Worker, local server) provides one implementation of each. The shapes
follow what both hosts offer natively, so the adapters stay thin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, for durations."""


class SqlStorage(Protocol):
    """Synchronous SQL, the shape of Durable Object ``ctx.storage.sql`` and ``sqlite3``."""

    def exec(self, sql: str, *params: Any) -> list[dict[str, Any]]: ...


class KeyValueStore(Protocol):
    """Text values with a time to live (KV on the edge, SQLite locally)."""

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str, ttl_seconds: int) -> None: ...

    async def delete(self, key: str) -> None: ...


class WarmCacheStore(Protocol):
    """The response cache's warm tier: short-lived text values, cheap to write, that may be
    lost at any time (the Cache API ``caches.default`` on the edge: per data centre, never
    replicated; the local store's short table or Redis prefix locally)."""

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str, ttl_seconds: int) -> None: ...

    async def delete(self, key: str) -> None: ...


class UpstreamResponse(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Lower-cased names."""

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    async def aclose(self) -> None: ...


class UpstreamError(Exception):
    """The upstream could not be reached or broke the connection (no HTTP status)."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the allowed time."""


class UpstreamTransport(Protocol):
    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout: float,
    ) -> UpstreamResponse:
        """Send a request; the body is not read yet. Raises UpstreamError on I/O failure."""


class AiBinding(Protocol):
    """Workers AI on the edge (the ``AI`` binding): ``env.AI.run(model, inputs)``.

    Returns the answer as a dict, or, when ``inputs["stream"]`` is true, an async iterator of
    SSE bytes. Raises UpstreamError when the binding fails."""

    async def run(self, model: str, inputs: dict[str, Any]) -> Any: ...


class BackgroundTasks(Protocol):
    """Work that outlives the response (``ctx.waitUntil`` on the edge)."""

    def run(self, job: Awaitable[None]) -> None: ...


class RateLimiterClient(Protocol):
    """Reaches the rate-limiter object named by its first argument (one Durable Object per
    partition on the edge, ``getByName(name)``) and calls the method of the same name on
    ``flaregate.ratelimits.limiter.RateLimiter`` with the remaining arguments."""

    async def check(self, key: str, policy: dict[str, Any], cost: float) -> dict[str, Any]: ...

    async def acquire(self, name: str, checks: list[dict[str, Any]]) -> dict[str, Any]: ...

    async def reconcile(self, name: str, adjustments: list[dict[str, Any]]) -> dict[str, Any]: ...

    async def usage(self, name: str) -> dict[str, Any]: ...

    async def reset(self, name: str, policy: str = "") -> dict[str, Any]: ...


class MetricsHubClient(Protocol):
    async def publish(self, events: list[dict[str, Any]]) -> None: ...

    async def snapshot(self) -> dict[str, Any]: ...

    async def health(self) -> dict[str, Any]:
        """``{"health": score, "process": ...}``: the cheap part of the snapshot /health needs."""

    async def analytics(self, window: str | None) -> dict[str, Any]:
        """Windows ("1h", "24h", "30d"; None for all), where the time goes, recent events."""

    async def logs(self, params: dict[str, str]) -> dict[str, Any]:
        """The request-log store: a page of records, or ``{"record": ...}`` for ``id``."""
        ...

    async def prometheus(self) -> str:
        """Lifetime counters and histograms in Prometheus text format."""


class Broadcaster(Protocol):
    """Sends one text frame to every live WebSocket subscriber of the hub."""

    def broadcast(self, text: str) -> None: ...

    def subscriber_count(self) -> int: ...


class HostStats(Protocol):
    """Figures only a host can measure, e.g. process memory on the local host."""

    def sample(self) -> dict[str, float]: ...


class Scheduler(Protocol):
    """Wakes the hub at a given time (a Durable Object alarm on the edge)."""

    async def schedule(self, at: float) -> None: ...


class SecurityStoreClient(Protocol):
    """Reaches the security store (gateway keys, signing nonces, webhooks): one Durable
    Object on the edge, an in-process object locally. Arguments and results are JSON-able."""

    async def call(self, op: str, args: dict[str, Any]) -> Any: ...


@dataclass(slots=True)
class Ports:
    clock: Clock
    cache: KeyValueStore
    upstream: UpstreamTransport
    tasks: BackgroundTasks
    rate_limiter: RateLimiterClient
    metrics_hub: MetricsHubClient
    security: SecurityStoreClient | None = None  # None: configured keys only, no admin key store
    ai: AiBinding | None = None  # the edge's Workers AI binding; None elsewhere (REST instead)
    # False on the edge: workerd cancels a request that awaits a future or event another
    # request resolves ("the Worker's code had hung"), so requests that share work there
    # poll plain state on their own timers instead of waiting on each other.
    cross_request_waits: bool = True
    warm_cache: WarmCacheStore | None = None  # None: the cache has no warm tier
