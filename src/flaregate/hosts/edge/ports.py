"""The core's ports over Workers bindings.

The Gateway is built once per isolate, but ``env`` and ``ctx`` arrive with each request, so
Worker-side ports look their binding up in the current :class:`RequestScope` at call time
(a context variable: concurrent requests in one isolate each see their own).
Durable-Object-side ports take their objects directly: a DO instance owns them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import js
import workers
from pyodide.ffi import to_js

from ...config import KNOWN_VARS, Settings, provider_key_names
from ...mcp_gateway.settings import credential_names as mcp_credential_names
from ...ports import (
    DEFAULT_MAX_RESPONSE_BYTES,
    SecurityStoreClient,
    UpstreamError,
    UpstreamLimits,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
    declared_too_large,
)
from ...security.sharded_store import ShardedSecurityStore
from ...sharding import shard_name
from . import rpc
from .batched_copy import BatchedCopy, CopyBroke
from .promises import quietly

log = logging.getLogger("flaregate.edge")

HUB_NAME = shard_name(0)  # the single metrics hub instance, or its first shard (the /ws sockets)
SECURITY_NAME = shard_name(0)  # the single security store instance, or its first shard


@dataclass(frozen=True, slots=True)
class RequestScope:
    env: Any
    ctx: Any
    host: str | None = None  # the request's host: the Cache API's keys live under it


_scope: ContextVar[RequestScope] = ContextVar("flaregate_edge_scope")
SCOPE_VAR = _scope  # read-only use elsewhere: which request a callback belongs to (event_loop.py)


def current() -> RequestScope:
    try:
        return _scope.get()
    except LookupError:
        raise RuntimeError("no Worker request is being handled (use bind(env, ctx))") from None


@contextmanager
def bind(env: Any, ctx: Any, host: str | None = None) -> Iterator[RequestScope]:
    """Make ``env``/``ctx`` the current request's for the enclosed code."""
    scope = RequestScope(env, ctx, host)
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def js_headers(headers: Any) -> dict[str, str]:
    """A JS ``Headers`` as a dict (names lower-cased, repeats already joined by the runtime),
    in one conversion: ``workers``' ``.headers`` builds an ``email`` HTTPMessage header by
    header, and reading it back parses each again, costly under Pyodide on every request."""
    return js.Object.fromEntries(headers).to_py()


def env_vars(env: Any) -> dict[str, str]:
    """The gateway's variables from a Worker ``env`` (vars and secrets are str attributes)."""
    found = {name: getattr(env, name, None) for name in KNOWN_VARS}
    for name in provider_key_names(found.get("FLAREGATE_PROVIDERS")):  # api_key_env secrets
        found[name] = getattr(env, name, None)
    for name in mcp_credential_names(found.get("FLAREGATE_MCP_SERVERS")):  # MCP servers' credential_env
        found[name] = getattr(env, name, None)
    return {name: str(value) for name, value in found.items() if value is not None}


# -- Worker side: bindings of the current request ------------------------------------------
def _raw_binding(binding: str) -> Any:
    """The current request's JS binding, not the SDK's wrapper of it (see rpc.py)."""
    return getattr(rpc.raw_env(current().env), binding)


def _durable_object(binding: str, name: str) -> Any:
    return _raw_binding(binding).getByName(name)


class KVStore:
    """The response cache over a KV namespace binding."""

    def __init__(self, binding: str = "CACHE") -> None:
        self._binding = binding

    def _kv(self) -> Any:
        return _raw_binding(self._binding)  # a str in, a str out: the wrapper adds nothing

    async def get(self, key: str) -> str | None:
        value = await self._kv().get(key)
        return None if rpc.is_null(value) else str(value)

    async def put(self, key: str, value: str, ttl_seconds: int) -> None:
        # KV rejects expirationTtl below 60 s.
        await self._kv().put(key, value, expirationTtl=max(60, int(ttl_seconds)))

    async def delete(self, key: str) -> None:
        await self._kv().delete(key)


class CacheApiStore:
    """The response cache's warm tier over the Cache API (``caches.default``): free, per
    data centre, never replicated. Each key is a synthetic GET URL under the Worker's own
    hostname (Cloudflare advises against foreign hostnames in cache keys); incoming requests
    never read it, since a Worker's route runs before the CDN cache. The stored Response
    carries ``Cache-Control: max-age`` (the Cache API's own expiry), and every entry its own
    expiry on top, as in KV."""

    FALLBACK_HOST = "flaregate-cache.internal"
    PATH = "/__flaregate/cache/"

    @classmethod
    def url(cls, key: str) -> str:
        try:
            host = current().host or cls.FALLBACK_HOST
        except RuntimeError:
            host = cls.FALLBACK_HOST
        return f"https://{host}{cls.PATH}{key.replace(':', '/')}"  # fg:c2:<hash> -> .../fg/c2/<hash>

    async def get(self, key: str) -> str | None:
        response = await js.caches.default.match(self.url(key))
        if not response:  # undefined (None) or null when there is no entry
            return None
        return str(await response.text())

    async def put(self, key: str, value: str, ttl_seconds: int) -> None:
        # The init and its headers cross as one object: one conversion instead of a Headers
        # object and a call per header (the floor's cacheput1 against cacheput, s7-put).
        headers = {"content-type": "application/json", "cache-control": f"max-age={max(1, int(ttl_seconds))}"}
        init = to_js({"headers": headers}, dict_converter=js.Object.fromEntries)
        await js.caches.default.put(self.url(key), js.Response.new(value, init))

    async def delete(self, key: str) -> None:
        await js.caches.default.delete(self.url(key))


class _Deadline:
    """Aborts a fetch through the runtime when a wait runs too long.

    ``asyncio.wait_for`` around a JS promise breaks Pyodide's loop in workerd (the request
    hangs, then answers 500); an ``AbortController`` aborted from a Python timer makes the
    runtime reject the pending fetch or body read instead, and tells the upstream to stop.
    """

    def __init__(self) -> None:
        self.controller = js.AbortController.new()
        self.expired = False
        self._timer: asyncio.TimerHandle | None = None
        self._due: float | None = None

    def arm(self, seconds: float) -> None:
        """Start a wait of ``seconds``. One runtime timer serves every wait (a stream re-arms
        per chunk): re-arming only moves the due time, and the timer, when it fires early,
        sleeps on to it; a timer per chunk would cost two JS calls each."""
        loop = asyncio.get_running_loop()
        self._due = loop.time() + seconds
        if self._timer is None:
            self._timer = loop.call_at(self._due, self._check)

    def disarm(self) -> None:
        self._due = None

    def release(self) -> None:
        """No more waits: drop the timer (the response is read or given up)."""
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self._due is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= self._due:
            self._expire()
        else:
            self._timer = loop.call_at(self._due, self._check)

    def _expire(self) -> None:
        self.expired = True
        self.abort()

    def abort(self) -> None:
        try:
            self.controller.abort()
        except Exception:
            log.debug("aborting the upstream fetch failed", exc_info=True)


class FetchUpstreamResponse:
    """An UpstreamResponse over a ``workers.fetch`` response; the body is a JS stream read
    through a reader this object holds, so that closing early can cancel it."""

    def __init__(self, response: Any, timeout: float, deadline: _Deadline) -> None:
        self._response = response
        self._timeout = timeout
        self._deadline = deadline
        self._reader: Any = None
        self._done = False
        self.status = int(response.status)
        self.headers = js_headers(response.js_object.headers)
        self._max_body = DEFAULT_MAX_RESPONSE_BYTES
        self._teed = False  # split by tee(): the client's branch is piped natively
        self._batched: BatchedCopy | None = None  # the copy this response reads on from, once teed

    def limit(self, limits: UpstreamLimits) -> None:
        self._max_body = limits.max_response_bytes

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        body = self._response.body
        if body is None:
            self._done = True
            return
        if self._reader is None and self._batched is None:
            self._reader = body.getReader()
        while self._batched is None:  # tee() may split the body between two chunks
            next_chunk = await self._next_chunk()
            if next_chunk is None:
                break
            yield next_chunk
        if self._batched is not None:  # teed: the copy reads on
            async for chunk in self._copy_chunks(self._batched):
                yield chunk
        self._done = True
        self._deadline.release()

    async def _next_chunk(self) -> bytes | None:
        """One chunk through ``_reader`` (None: the end). The timeout bounds each wait for
        the next chunk, not the whole stream."""
        self._deadline.arm(self._timeout)
        try:
            result = await self._reader.read()
        except Exception as exc:  # a JsException: the stream broke or was aborted
            if self._deadline.expired:
                raise UpstreamTimeout(f"no data for {self._timeout:g}s") from None
            raise UpstreamError(_describe(exc)) from None
        finally:
            self._deadline.disarm()
        if result.done:
            return None
        chunk = result.value
        return chunk.to_bytes() if hasattr(chunk, "to_bytes") else bytes(chunk)

    async def _copy_chunks(self, copy: BatchedCopy) -> AsyncIterator[bytes]:
        """A tee'd copy: runs of batches while it flows (hosts/edge/batched_copy.py), one
        chunk at a time (with the timeout) while it pauses, then batches again."""
        while True:
            try:
                async for chunk in copy.run():
                    yield chunk
            except CopyBroke as exc:
                raise UpstreamError(_describe(exc.reason)) from None
            if copy.ended:
                break
            self._reader = copy.copy.getReader()
            try:
                direct = await self._next_chunk()
            finally:
                quietly(self._reader.releaseLock)  # a cancellation must go on as it is
                self._reader = None
            if direct is None:
                break
            yield direct

    async def read(self) -> bytes:
        """The whole body, never more than the cap: refused by its ``content-length``
        before a byte is read, or as soon as it passes the cap (the body is then cancelled
        on close)."""
        limit = self._max_body
        if declared_too_large(self.headers, limit):
            raise UpstreamResponseTooLarge("a body", limit)
        parts, size = [], 0
        async for chunk in self.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise UpstreamResponseTooLarge("a body", limit)
            parts.append(chunk)
        return b"".join(parts)

    def tee(self) -> Any:
        """Split the rest of the body (``ReadableStream.tee()``): one branch is returned, for
        the client natively; this response reads on from the other. The reader that read
        the first bytes lets go of the body first (a locked stream cannot be split)."""
        body = self._response.body
        if body is None or self._done or not hasattr(body, "tee"):  # (the CPython tests' stand-in cannot)
            return None
        if self._reader is not None:
            self._reader.releaseLock()
        branches = body.tee()
        native, copy = branches[0], branches[1]
        self._reader = None
        self._batched = BatchedCopy(copy)  # aiter_bytes reads on through it
        self._teed = True
        return native

    async def aclose(self) -> None:
        self._deadline.release()
        body = self._response.body
        if self._done or body is None:
            return
        self._done = True
        if self._teed:
            # The copy is let go before its end (a break, a cap, a client gone): the other
            # branch, the client's pipe, would keep the call open (and the copy would buffer
            # for no reader): hang up on the upstream now, before anything more comes.
            self._deadline.abort()
        try:
            # Tell the upstream we stopped reading; the stream is locked to our reader once
            # we read from it (or through the copy, once teed), so cancel through that then.
            held = self._reader if self._reader is not None else self._batched.copy if self._batched else body
            await held.cancel()
        except Exception:
            log.debug("cancelling the upstream body failed", exc_info=True)
            self._deadline.abort()


def _describe(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]


class FetchTransport:
    """Outbound HTTP with ``workers.fetch`` (looked up at call time so tests can swap it)."""

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> FetchUpstreamResponse:
        deadline = _Deadline()
        options: dict[str, Any] = {"method": method, "headers": dict(headers), "redirect": "manual",
                                   "signal": deadline.controller.signal}
        if body:
            options["body"] = body
        deadline.arm(timeout)
        try:
            response = await workers.fetch(url, **options)
        except Exception as exc:  # workers.fetch turns JS errors into OSError
            deadline.release()
            if deadline.expired:
                raise UpstreamTimeout(f"no response within {timeout:g}s") from None
            raise UpstreamError(_describe(exc)) from None
        finally:
            deadline.disarm()
        return FetchUpstreamResponse(response, timeout, deadline)


class WaitUntilTasks:
    """Background work through ``ctx.waitUntil`` of the current request."""

    def run(self, job: Awaitable[None]) -> None:
        scope = current()
        scope.ctx.waitUntil(within(scope, job))


async def within(scope: RequestScope, job: Awaitable[Any]) -> Any:
    """Await ``job`` with ``scope`` current, however and whenever the runtime runs it."""
    token = _scope.set(scope)
    try:
        return await job
    finally:
        _scope.reset(token)


class DurableRateLimiter:
    """One RateLimiter Durable Object per partition (a gateway key, a client network, a
    model: see flaregate.ratelimits.scope), reached over RPC by its name."""

    def __init__(self, binding: str = "RATE_LIMITER") -> None:
        self._binding = binding

    def _stub(self, name: str) -> Any:
        return _durable_object(self._binding, name)

    async def check(self, key: str, policy: dict[str, Any], cost: float) -> dict[str, Any]:
        return await rpc.call(self._stub(key), "check", key, policy, float(cost))

    async def acquire(self, name: str, checks: list[dict[str, Any]]) -> dict[str, Any]:
        return await rpc.call(self._stub(name), "acquire", checks)

    async def reconcile(self, name: str, adjustments: list[dict[str, Any]]) -> dict[str, Any]:
        return await rpc.call(self._stub(name), "reconcile", adjustments)

    async def usage(self, name: str) -> dict[str, Any]:
        return await rpc.call(self._stub(name), "usage")

    async def reset(self, name: str, policy: str = "") -> dict[str, Any]:
        return await rpc.call(self._stub(name), "reset", policy)


class DurableMetricsHub:
    """One MetricsHub Durable Object (the single hub, or one shard: ``name``), over RPC."""

    def __init__(self, binding: str = "METRICS_HUB", name: str = HUB_NAME) -> None:
        self._binding = binding
        self._name = name

    def _stub(self) -> Any:
        return _durable_object(self._binding, self._name)

    async def parts(self, view: str, arg: str | None = None) -> dict[str, Any]:
        return await rpc.call(self._stub(), "parts", view, arg)

    async def publish(self, events: list[dict[str, Any]]) -> None:
        await rpc.call(self._stub(), "publish", events)

    async def snapshot(self) -> dict[str, Any]:
        return await rpc.call(self._stub(), "snapshot")

    async def health(self) -> dict[str, Any]:
        return await rpc.call(self._stub(), "health")

    async def analytics(self, window: str | None) -> dict[str, Any]:
        return await rpc.call(self._stub(), "analytics", window)

    async def prometheus(self) -> str:
        return str(await rpc.call(self._stub(), "prometheus"))

    async def logs(self, params: dict[str, str]) -> dict[str, Any]:
        return await rpc.call(self._stub(), "logs", params)


class DurableSecurityStore:
    """One SecurityStore Durable Object (key hashes, nonces, webhooks; ``name``: a shard), over RPC."""

    def __init__(self, binding: str = "SECURITY_STORE", name: str = SECURITY_NAME) -> None:
        self._binding = binding
        self._name = name

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        return await rpc.call(_durable_object(self._binding, self._name), "run_op", op, dict(args))


def hub_client(settings: Settings) -> Any:
    """The hub port of the Worker: the one MetricsHub object, or N shards merged
    (``HUB_SHARDS``); the sharded client's modules load only when N > 1."""
    shards = settings.shards
    if shards.hub_shards <= 1:
        return DurableMetricsHub("METRICS_HUB")
    from ...hub.shards import ShardedHub  # HUB_SHARDS > 1 only: start-up as it was

    return ShardedHub([DurableMetricsHub("METRICS_HUB", shard_name(i)) for i in range(shards.hub_shards)],
                      settings.health_latency_target_ms, timeout=shards.hub_publish_timeout_seconds,
                      buffer_batches=shards.hub_buffer_batches)


def security_client(settings: Settings) -> Any:
    """The security port of the Worker: the one SecurityStore object, or N shards
    (``SECURITY_SHARDS``, with ``SECURITY_SHARDS_PREVIOUS`` read as a fallback)."""
    shards = settings.shards
    count, previous = shards.security_shards, shards.security_shards_previous
    if count <= 1 and not previous:
        return DurableSecurityStore("SECURITY_STORE")
    stores: list[SecurityStoreClient] = [DurableSecurityStore("SECURITY_STORE", shard_name(i))
                                         for i in range(max(count, previous or 0))]
    return ShardedSecurityStore(stores, count, previous)


class PeerShards:
    """The other metrics-hub shards as the first one (the /ws sockets' holder) reaches them
    from inside its Durable Object: their snapshot parts, in parallel."""

    def __init__(self, env: Any, count: int, binding: str = "METRICS_HUB") -> None:
        self._namespace = getattr(rpc.raw_env(env), binding)
        self._names = [shard_name(i) for i in range(1, count)]

    async def __call__(self) -> list[Any]:
        async def one(name: str) -> Any:
            return rpc.decode(await self._namespace.getByName(name).parts(rpc.encode(["snapshot", None])))

        return list(await asyncio.gather(*(one(name) for name in self._names), return_exceptions=True))


class DurableSemanticIndex:
    """The semantic cache's index: one SemanticIndex Durable Object per partition, over RPC.
    One call per lookup: the object searches its partition and answers the shortlist's best."""

    def __init__(self, binding: str = "SEMANTIC_INDEX") -> None:
        self._binding = binding

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        stub = _durable_object(self._binding, str(args["partition"]))
        return await rpc.call(stub, "run_op", op, dict(args))


# -- Durable Object side --------------------------------------------------------------------
class DurableSql:
    """SqlStorage over ``ctx.storage.sql``: each cursor is consumed at once (an open cursor
    can lock the database) and its rows become plain dicts. Given the storage too, it
    offers ``transaction_sync(work)``: ``ctx.storage.transactionSync``, all of ``work``'s
    writes or none (the plain implicit transaction would keep the writes made before an
    exception).

    Statements go to the runtime's own ``SqlStorage``, under the SDK's wrapper of it: the
    wrapper walks every argument and every result in Python (a type check, an awaitable
    check and ``to_js`` per parameter, ``to_py`` and a null walk per result), some 1 000
    Python calls per chat request (``bench.edge_pycalls``). Parameters here are only
    str, int, float and None, which cross as they are, and the rows come back as one JSON
    string (V8's ``JSON.stringify``, CPython's C ``json``): null is None, as SQL NULL. (JSON
    has no infinity, so a REAL infinity would read back as None: nothing here stores one.)"""

    def __init__(self, sql: Any, storage: Any = None) -> None:
        self._sql = getattr(sql, "_binding", sql)  # the SDK's _BindingWrapper keeps it there
        self._storage = storage

    def exec(self, query: str, *params: Any) -> list[dict[str, Any]]:
        cursor = self._sql.exec(query, *map(_js_safe, params))
        rows: list[dict[str, Any]] = rpc.decode(js.JSON.stringify(cursor.toArray()))
        return rows

    def transaction_sync(self, work: Callable[[], Any]) -> Any:
        if self._storage is None:
            return work()
        return self._storage.transactionSync(work)


_INT32 = 2**31


def _js_safe(value: Any) -> Any:
    """Pyodide hands a Python int that does not fit in 32 bits to JavaScript as a BigInt,
    which ``sql.exec`` rejects ("Cannot convert a BigInt value to a number"): such ints
    cross as floats, exact up to 2**53 (SQLite compares INTEGER and REAL by value). None
    would cross as ``undefined``, which ``sql.exec`` rejects too: it goes as null."""
    if value is None:
        return rpc.jsnull
    if type(value) is int and not -_INT32 <= value < _INT32:
        return float(value)
    return value


class AlarmScheduler:
    """The hub's wake-ups as the Durable Object alarm (one alarm: keep the earliest)."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    async def schedule(self, at: float) -> None:
        when = int(at * 1000)
        pending = await self._storage.getAlarm()  # epoch ms, or None
        if pending is None or float(pending) > when:
            await self._storage.setAlarm(when)


class HibernationBroadcaster:
    """Fan-out to the hibernatable WebSockets accepted with ``tag``."""

    def __init__(self, ctx: Any, tag: str) -> None:
        self._ctx = ctx
        self._tag = tag

    def _sockets(self) -> list[Any]:
        return list(self._ctx.getWebSockets(self._tag))

    def broadcast(self, text: str) -> None:
        for ws in self._sockets():
            try:
                ws.send(text)
            except Exception:
                # A socket we cannot write to is gone; close it so it leaves the set.
                try:
                    ws.close(1011, "send failed")
                except Exception:
                    pass

    def subscriber_count(self) -> int:
        return len(self._sockets())
