"""Ports: the small protocols through which the core reaches the outside world.

Each host (edge Worker, local server) provides one implementation of each. The shapes
follow what both hosts offer natively, so the adapters stay thin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
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

    async def read(self) -> bytes:
        """The whole body; raises UpstreamResponseTooLarge past the response's byte cap
        (``limit(limits)``, which a response may offer and wrappers pass on; a transport's
        responses read no more than DEFAULT_MAX_RESPONSE_BYTES without it)."""

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Teed:
    """A streamed upstream body split in two (a host's transport that can: the edge's
    ``ReadableStream.tee()``): the response reads on from a copy, and ``native``, the rest
    of the body in the host's own form, goes to the client without crossing into Python.
    ``head``: the bytes read before the split (the peeked first event), to send first;
    ``pending()``: the partial event the copy has stopped inside (b"" between events)."""

    head: bytes
    native: Any
    pending: Callable[[], bytes]


class UpstreamError(Exception):
    """The upstream could not be reached or broke the connection (no HTTP status)."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the allowed time."""


# What one upstream answer may send (a hostile or broken upstream must not exhaust an
# isolate's 128 MB): the resilience policy's defaults (``UPSTREAM_MAX_*``), see
# routing/resilience.py for why these values.
DEFAULT_MAX_EVENT_BYTES = 4 << 20  # one SSE line or event
DEFAULT_MAX_RESPONSE_BYTES = 16 << 20  # one whole (non-streamed) body
DEFAULT_MAX_STREAM_BYTES = 64 << 20  # one stream, all of it
DEFAULT_SINGLE_FLIGHT_MAX_BYTES = 4 << 20  # what a single-flight keeps of its stream
# The largest event cap that may be configured; the parsers behind the caller's checks
# use it as their backstop, so they never refuse what the configured cap let through.
MAX_EVENT_BYTES_CEILING = 64 << 20


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


DEFAULT_LIMITS = UpstreamLimits()


def declared_too_large(headers: Mapping[str, str], limit: int) -> bool:
    """A body that says, up front, it is longer than ``limit`` (``content-length`` of an
    unencoded body: a compressed one's length says nothing of what it inflates to)."""
    length = headers.get("content-length", "")
    return length.isdigit() and int(length) > limit and headers.get("content-encoding", "identity") == "identity"


class UpstreamTooLarge(UpstreamError):
    """The upstream sent more than a cap allows. ``str()`` starts with ``code``, so the
    relays' "stream interrupted" error events name the cap that was hit."""

    code = "upstream_too_large"
    variable = ""  # the setting that raises the cap

    def __init__(self, what: str, limit: int) -> None:
        self.limit = limit
        super().__init__(f"{self.code}: {what} over the gateway's limit of {limit} bytes ({self.variable})")


class UpstreamResponseTooLarge(UpstreamTooLarge):
    code = "upstream_response_too_large"
    variable = "UPSTREAM_MAX_RESPONSE_BYTES"


class UpstreamEventTooLarge(UpstreamTooLarge):
    code = "upstream_event_too_large"
    variable = "UPSTREAM_MAX_EVENT_BYTES"


class UpstreamStreamTooLarge(UpstreamTooLarge):
    code = "upstream_stream_too_large"
    variable = "UPSTREAM_MAX_STREAM_BYTES"


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


class BlobStore(Protocol):
    """Large objects written and read as streams (uploaded files, batch results): R2 on the
    edge, a directory locally (shared by replicas). Never held whole in memory."""

    async def put(self, name: str, chunks: AsyncIterator[bytes]) -> int:
        """Store ``chunks`` under ``name`` (replacing it); returns the bytes written. An
        exception from ``chunks`` leaves nothing stored under ``name``."""

    async def open(self, name: str) -> AsyncIterator[bytes] | None:
        """The object's bytes chunk by chunk, or None when there is none."""

    async def delete(self, name: str) -> None: ...


class JobStoreClient(Protocol):
    """Reaches the job store (the files catalogue, batches and their per-line checkpoints) of
    one owner: a Durable Object per gateway key on the edge, an in-process object over SQLite
    locally. Arguments and results are JSON-able."""

    async def call(self, owner: str, op: str, args: dict[str, Any]) -> Any: ...
class SemanticIndexClient(Protocol):
    """Reaches the semantic cache's index (cache/semantic/index.py): in process locally, in
    Redis across replicas, the partition's Durable Object on the edge. ``op``: search, add,
    delete; arguments and results are JSON-able."""

    async def call(self, op: str, args: dict[str, Any]) -> Any: ...


class TextEmbedder(Protocol):
    """An embedding model the host carries itself (the standalone server's WordLlama)."""

    name: str

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


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
    blobs: BlobStore | None = None  # None (with jobs None): no Files and Batches API
    jobs: JobStoreClient | None = None
    semantic_index: SemanticIndexClient | None = None  # None: no semantic cache on this host
    embedder: Callable[[], TextEmbedder] | None = None  # the host's own model, loaded on first use
