"""The local host's ASGI application: HTTP to the core, ``/ws`` to the in-process hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from ...batches.store import JobStore
from ...clock import SystemClock
from ...config import Settings
from ...errors import GatewayError
from ...gateway import Gateway
from ...http import Headers, Request, Response
from ...hub.aggregator import MAX_CLIENT_FRAME, MetricsHub
from ...observability.export import build_exporters
from ...observability.request_bodies import log_secrets
from ...ports import KeyValueStore, Ports, RateLimiterClient, SemanticIndexClient, WarmCacheStore
from ...ratelimits.limiter import RateLimiter
from ...realtime.entry import PATH as REALTIME_PATH
from ...routing.probes import HealthProber
from ...security.keys import KeyRing
from ...security.store import SecurityStore
from . import redis_backend
from .batch_worker import LocalBatchWorker, LocalJobClient
from .blob_dir import DirectoryBlobStore
from .files import private_dir
from .host_stats import ProcessStats
from .realtime import LocalRealtime
from .runtime import (
    AsyncioScheduler,
    AsyncioTasks,
    LocalHubClient,
    LocalRateLimiterClient,
    LocalSecurityClient,
    PeriodicTask,
    Subscriber,
    SubscriberSet,
)
from .static_embedder import StaticEmbedder
from .storage import SqliteKeyValueStore, SqliteStorage
from .transport import AiohttpTransport

log = logging.getLogger("flaregate.local")

Scope = dict[str, Any]
COMPACT_EVERY_SECONDS = 60.0  # the periodic retention task (the hub's alarm does it too)
SLOW_CLOSE_GRACE_SECONDS = 1.0


def _semantic_index(storage: SqliteStorage, redis: Any, clock: SystemClock) -> SemanticIndexClient:
    """The semantic cache's index: in the SQLite file, or in Redis shared by the replicas.
    Imported only when a route turns the semantic cache on."""
    from ...cache.semantic.index import LocalSemanticIndex, SqlSemanticIndex
    from .semantic_redis import RedisSemanticIndex

    return RedisSemanticIndex(redis, clock) if redis is not None else LocalSemanticIndex(SqlSemanticIndex(storage, clock))


async def _relay(stream: AsyncIterator[bytes], send: Any) -> None:
    async for chunk in stream:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _body_chunks(receive: Any) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body"):
            return


async def _disconnect(receive: Any) -> None:
    """Returns when the server reports the client gone (the request body is read by now,
    so ``receive`` has nothing else to say; uvicorn also says it once the response is sent).
    A server whose ``receive`` fails here cannot tell: then this waits for good."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:
        log.debug("cannot watch for the client leaving", exc_info=True)
        await asyncio.Event().wait()


async def _relay_until_disconnect(stream: AsyncIterator[bytes], send: Any, receive: Any) -> None:
    """Relay ``stream`` while watching ``receive``: a client that leaves stops the relay at
    once, even while the stream waits on a silent upstream (a send to a gone client returns
    without error, so the relay alone would notice only at the upstream's end). The stream
    is iterated in a task of its own and that task is cancelled: an async generator waiting
    in ``__anext__`` cannot be closed, but cancelling its waiter unwinds it (the core's relay
    records "aborted" and closes its upstream on the way out)."""
    relay = asyncio.ensure_future(_relay(stream, send))
    watcher = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((relay, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not relay.done():
            relay.cancel()
            await asyncio.wait((relay,))  # its unwinding (the upstream's close) before we return
    if not relay.cancelled():
        relay.result()  # the relay's own failure, as when it ran inline


class LocalHost:
    """Builds the core with local ports over one SQLite file, and serves it over ASGI."""

    def __init__(self, settings: Settings, data_dir: str | Path, api_keys: list[str]) -> None:
        data = private_dir(Path(data_dir))  # 0700; the SQLite file in it 0600 (files.py)
        self.settings = settings
        clock = SystemClock()
        self.storage = SqliteStorage(data / "flaregate.sqlite3")
        self.tasks = AsyncioTasks()
        self.subscribers = SubscriberSet(settings.ws_outbox_limit)
        scheduler = AsyncioScheduler(self.tasks)
        self.transport = AiohttpTransport()
        self.hub = MetricsHub(self.storage, clock, self.subscribers, scheduler, settings.metrics_tick_seconds,
                              latency_target_ms=settings.health_latency_target_ms, host_stats=ProcessStats(),
                              log_retention=settings.request_logs.retention(),
                              log_unauthenticated_max_records=settings.request_logs.unauthenticated_max_records,
                              log_max_bytes=settings.request_logs.max_bytes,
                              log_sample_info_per_second=settings.request_logs.sample_info_per_second,
                              exporters=build_exporters(settings, self.transport, clock),
                              log_secrets=log_secrets(settings) if settings.request_logs.bodies != "off" else None,
                              export_on_record=settings.redis_url is None)
        scheduler.target = self.hub.alarm
        self.compaction = PeriodicTask(COMPACT_EVERY_SECONDS, self.hub.compact)
        self.security = SecurityStore(self.storage, clock)  # gateway keys (hashed), nonces, webhooks
        cache: KeyValueStore = SqliteKeyValueStore(self.storage, clock)
        warm_cache: WarmCacheStore = SqliteKeyValueStore(self.storage, clock, table="kv_warm")
        rate_limiter: RateLimiterClient = LocalRateLimiterClient(RateLimiter(self.storage, clock))
        security: Any = LocalSecurityClient(self.security)
        self.redis: Any = None
        self.hub_feed: redis_backend.RedisHubFeed | None = None
        if settings.redis_url is not None:  # replicas share limits, the cache and keys through Redis
            self.redis = redis_backend.connect(settings.redis_url.get_secret_value())
            cache = redis_backend.RedisKeyValueStore(self.redis)
            warm_cache = redis_backend.RedisKeyValueStore(self.redis, redis_backend.WARM_CACHE_PREFIX)
            rate_limiter = redis_backend.RedisRateLimiterClient(self.redis)
            security = redis_backend.RedisSecurityClient(self.redis, clock)
            self.hub_feed = redis_backend.RedisHubFeed(self.redis, self.hub)
            settings = redis_backend.uncached_key_lookups(settings)
        # Files and batches: a directory (shared by replicas when they mount one) holding the
        # blobs and the job store's own SQLite file (catalogue, batches, line checkpoints, leases).
        files_dir = private_dir(Path(settings.batches.files_dir) if settings.batches.files_dir else data / "files")
        if settings.redis_url is not None and settings.batches.files_dir is None:
            log.warning("replicas over Redis share files and batches only through one FLAREGATE_FILES_DIR "
                        "they all mount; this one keeps its own under its data dir (docs/batches.md)")
        self.job_storage = SqliteStorage(files_dir / "jobs.sqlite3")
        jobs = LocalJobClient(JobStore(self.job_storage))
        # The semantic cache's index, only where a route turns it on (its modules load then).
        semantic_index = _semantic_index(self.storage, self.redis, clock) if settings.cache.route_semantic else None
        ports = Ports(
            clock=clock,
            cache=cache,
            upstream=self.transport,
            tasks=self.tasks,
            rate_limiter=rate_limiter,
            metrics_hub=LocalHubClient(self.hub, self.hub_feed),
            security=security,
            warm_cache=warm_cache,
            blobs=DirectoryBlobStore(files_dir),
            jobs=jobs,
            semantic_index=semantic_index,
            embedder=StaticEmbedder,  # loaded only when a route's semantic cache uses it
        )
        self.gateway = Gateway(settings, ports, KeyRing(api_keys))
        assert self.gateway.batches is not None
        self.batch_worker = LocalBatchWorker(self.gateway.batches.get(), jobs)
        self.realtime = LocalRealtime(self.gateway)
        self._prober: asyncio.Task[None] | None = None
        self._feed_task: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        await self.batch_worker.stop()
        if self._prober is not None:
            self._prober.cancel()
        if self._feed_task is not None:
            self._feed_task.cancel()
        await self.compaction.stop()
        await self.gateway.analytics.flush()
        await self.tasks.drain()
        if self.hub.exporters is not None:  # what the exporters still hold, one last attempt
            await self.hub.exporters.flush(final=True)
        await self.transport.aclose()
        await self.realtime.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        self.storage.close()
        self.job_storage.close()

    # -- ASGI ----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.compaction.start()
                self.batch_worker.start()  # resumes the batches a restart interrupted
                if self.hub_feed is not None:  # fold every replica's events into this hub
                    self._feed_task = asyncio.ensure_future(self.hub_feed.run())
                interval = self.settings.resilience.probe_interval_seconds
                if interval > 0:  # active health probes of open circuits (see health_probes.py)
                    prober = HealthProber(self.gateway.upstream, self.gateway.router.providers)
                    self._prober = asyncio.ensure_future(prober.run_forever(interval))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    def _request(scope: Scope, body: bytes = b"", stream: AsyncIterator[bytes] | None = None) -> Request:
        headers = Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        raw_query = scope.get("query_string", b"")
        query = dict(parse_qsl(raw_query.decode("latin-1")))
        client = scope.get("client")
        return Request(scope.get("method", "GET"), scope["path"], headers, body, query, client[0] if client else None,
                       raw_query=raw_query.decode("utf-8", "surrogateescape"), stream=stream)

    async def _read_body(self, scope: Scope, receive: Any) -> bytes | None:
        """The body, or None when it is over the limit (read no further than limit + 1)."""
        limit = self.settings.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)

    async def _http(self, scope: Scope, receive: Any, send: Any) -> None:
        if self.gateway.streams_body(scope.get("method", "GET"), scope["path"]):  # an upload: read as it comes
            response = await self.gateway.handle(self._request(scope, stream=_body_chunks(receive)))
            await self._send(response, send)
            return
        body = await self._read_body(scope, receive)
        if body is None:
            error = GatewayError(413, f"Request body exceeds {self.settings.max_body_bytes} bytes.",
                                 code="request_too_large")
            response = error.to_response()
            response.headers["connection"] = "close"
        else:
            response = await self.gateway.handle(self._request(scope, body))
        await self._send(response, send, receive)

    @staticmethod
    async def _send(response: Response, send: Any, receive: Any = None) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
        if isinstance(response.body, bytes | bytearray):
            headers.append((b"content-length", str(len(response.body)).encode()))
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            await send({"type": "http.response.body", "body": bytes(response.body)})
            return
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        stream = response.body
        try:
            if receive is None:
                await _relay(stream, send)
            else:
                await _relay_until_disconnect(stream, send, receive)
        finally:
            # Runs the relay's cleanup (close upstream, record analytics) even when the
            # client went away mid-stream.
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]

    async def _websocket(self, scope: Scope, receive: Any, send: Any) -> None:
        request = self._request(scope)
        if request.path == REALTIME_PATH:  # the Realtime API: a session relayed to a provider
            await self.realtime.serve(request, receive, send, lambda exc: self._reject(scope, send, exc))
            return
        if request.path != "/ws":
            await send({"type": "websocket.close", "code": 1008, "reason": "unknown path"})
            return
        try:
            subprotocol = self.gateway.authorize_admin(request)  # the admin key, not a gateway key
        except GatewayError as exc:
            await self._reject(scope, send, exc)
            return
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept", "subprotocol": subprotocol})
        subscriber = self.subscribers.add()
        try:
            for text in self.hub.greeting():
                self.subscribers.send(subscriber, text)
        except Exception:  # a failing hub store: close with a reason rather than a stack trace
            log.warning("metrics hub unavailable for a new subscriber", exc_info=True)
            self.subscribers.remove(subscriber)
            await send({"type": "websocket.close", "code": 1011, "reason": "metrics hub unavailable"})
            return
        sender = asyncio.ensure_future(self._pump(subscriber, send))
        receiver = asyncio.ensure_future(self._listen(subscriber, receive))
        dropped = asyncio.ensure_future(subscriber.dropped.wait())
        try:
            await asyncio.wait([sender, receiver, dropped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.subscribers.remove(subscriber)
            for task in (sender, receiver, dropped):
                task.cancel()
            close = subscriber.close_reason or ((1008, "subscriber too slow") if subscriber.dropped.is_set() else None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(send({"type": "websocket.close", "code": close[0], "reason": close[1]}),
                                           SLOW_CLOSE_GRACE_SECONDS)
            if subscriber.dropped.is_set():
                self._abort_later(send)

    @staticmethod
    def _abort_later(send: Any) -> None:
        """Tear down a connection whose peer stopped reading. A close (ours, or uvicorn's
        after its close timeout) waits for unsent bytes to drain, which for such a peer is
        forever. ASGI has no abort, so reach uvicorn's transport (as the mock upstream does)
        and abort it after a grace period in which a merely slow peer can read the close."""
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if transport is not None:
            asyncio.get_running_loop().call_later(SLOW_CLOSE_GRACE_SECONDS, transport.abort)

    async def _reject(self, scope: Scope, send: Any, exc: GatewayError) -> None:
        response = exc.to_response()
        if "websocket.http.response" in scope.get("extensions", {}):
            headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
            await send({"type": "websocket.http.response.start", "status": exc.status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": response.body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:100]})

    @staticmethod
    async def _pump(subscriber: Subscriber, send: Any) -> None:
        while True:
            text = await subscriber.outbox.get()
            await send({"type": "websocket.send", "text": text})

    async def _listen(self, subscriber: Subscriber, receive: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("text")
            frame = frame if frame is not None else message.get("bytes") or b""
            if len(frame.encode() if isinstance(frame, str) else frame) > MAX_CLIENT_FRAME:
                subscriber.close_reason = (1009, f"message too big (limit {MAX_CLIENT_FRAME} bytes)")
                return
            try:
                reply = self.hub.reply(frame)
            except Exception:
                log.warning("metrics hub could not answer a subscriber", exc_info=True)
                reply = '{"type": "error", "message": "metrics hub unavailable"}'
            if reply is not None:
                # Replies wait for room: a client that floods requests slows itself down
                # (we stop reading it); only broadcasts drop a subscriber that stops reading.
                await subscriber.outbox.put(reply)
