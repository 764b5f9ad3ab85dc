"""The Worker's fetch handler: ``workers.Request`` -> core Request -> Gateway -> ``workers.Response``.

``GET /ws`` is authorised here with the admin key (header, ``?token=`` or the subprotocol
``bearer.<key>``) and then handed, as a copy of the request carrying the subprotocol the
101 must select, to the metrics hub Durable Object, which holds the hibernatable WebSockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import js
import workers
from pyodide.ffi import to_js

from ...clock import SystemClock
from ...config import ConfigError, InsecureConfigError, settings_from_vars
from ...errors import GatewayError
from ...gateway import Gateway
from ...http import Headers, Request, Response
from ...observability.logs import configure_logging
from ...pipeline.pass_through import PassThrough
from ...ports import Ports
from ...realtime.entry import PATH as REALTIME_PATH
from . import batches, event_loop, pass_through, rpc
from .blobs import R2BlobStore
from .console_log import ConsoleHandler
from .objects import SUBPROTOCOL_HEADER
from .ports import (
    HUB_NAME,
    SCOPE_VAR,
    CacheApiStore,
    DurableRateLimiter,
    DurableSemanticIndex,
    FetchTransport,
    KVStore,
    RequestScope,
    WaitUntilTasks,
    bind,
    current,
    env_vars,
    hub_client,
    js_headers,
    security_client,
    within,
)
from .workers_ai import WorkersAiBinding

log = logging.getLogger("flaregate.edge")
# While an SSE stream's upstream is silent, an SSE comment this often: workerd notices a
# client that left only when it writes to it (see _pump).
HEARTBEAT_SECONDS = 0.5
HEARTBEAT = b": keep-alive\n\n"
# A refused oversize body is read (and dropped) up to this much before the 413 goes out.
DRAIN_LIMIT_BYTES = 8 * 1024 * 1024

# One Gateway per isolate, rebuilt only when the variables change (e.g. a new secret).
_cached: tuple[tuple[tuple[str, str], ...], Gateway] | None = None


# The JS env object the cached Gateway was built from (Pyodide's ``js_id``): while each
# request brings that same object, its variables are the same, and reading them again (some
# 70 names across the FFI, each missing one an exception) is skipped.
_cached_env_id: int | None = None


def _env_id(env: Any) -> int | None:
    js_id = getattr(rpc.raw_env(env), "js_id", None)
    return js_id if isinstance(js_id, int) else None


def gateway_for(env: Any) -> Gateway:
    global _cached, _cached_env_id
    env_id = _env_id(env)
    if _cached is not None and env_id is not None and env_id == _cached_env_id:
        return _cached[1]
    found = env_vars(env)
    key = tuple(sorted(found.items()))
    if _cached is None or _cached[0] != key:
        settings = settings_from_vars(found)
        ports = Ports(
            clock=SystemClock(),
            cache=KVStore("CACHE"),
            upstream=FetchTransport(),
            tasks=WaitUntilTasks(),
            rate_limiter=DurableRateLimiter("RATE_LIMITER"),
            metrics_hub=hub_client(settings),  # one hub, or HUB_SHARDS merged
            # Stored keys, signing nonces, webhooks; without the binding: configured keys only.
            security=security_client(settings) if hasattr(env, "SECURITY_STORE") else None,
            # Workers AI through the AI binding when there is one; else its REST API.
            ai=WorkersAiBinding(lambda: current().env.AI) if hasattr(env, "AI") else None,
            cross_request_waits=False,
            warm_cache=CacheApiStore(),  # the warm tier: caches.default of this data centre
            # Files in R2 and each key's batches in a Durable Object, where both are bound.
            blobs=R2BlobStore("FILES") if hasattr(env, "FILES") and hasattr(env, batches.BINDING) else None,
            jobs=batches.DurableJobStore() if hasattr(env, "FILES") and hasattr(env, batches.BINDING) else None,
            # The semantic cache's index, one object per partition (used only by routes that turn it on).
            semantic_index=DurableSemanticIndex("SEMANTIC_INDEX") if hasattr(env, "SEMANTIC_INDEX") else None,
        )
        # Once per isolate (and per change of the variables): JSON lines on stderr, which
        # reach Workers logs, at LOG_LEVEL, with every configured secret redacted.
        configure_logging(settings, handler=ConsoleHandler())
        gateway = Gateway(settings, ports)
        if gateway.batches is not None:  # a batch created or polled arms its object's alarm
            gateway.batches.wake = lambda owner, batch_id: ports.tasks.run(batches.wake(owner, batch_id))
        _cached = (key, gateway)
    _cached_env_id = env_id
    return _cached[1]


async def handle_fetch(request: Any, env: Any, ctx: Any) -> Any:
    event_loop.install(SCOPE_VAR)  # at the first request: the loop is the isolate's from then on
    with bind(env, ctx, urlsplit(str(request.url)).netloc) as scope:
        try:
            response = await _handle(request, env)
        except GatewayError as exc:
            response = exc.to_response()
        except Exception:  # glue failures still answer as OpenAI JSON, never a bare 1101
            log.exception("unhandled error in the Worker host")
            response = GatewayError(500, "Internal gateway error.", type="api_error",
                                    code="internal_error").to_response()
        return _to_workers(response, scope) if isinstance(response, Response) else response


async def _handle(request: Any, env: Any) -> Any:
    try:
        gateway = gateway_for(env)
    except InsecureConfigError as exc:  # no start-up step to refuse: every request is refused
        log.error("refusing to serve: %s", exc)  # the reason in the log, never in the answer
        raise GatewayError(503, "The gateway is misconfigured; its operator has been told why.", type="api_error",
                           code="misconfigured") from None
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc)  # details in the log, not in the body
        raise GatewayError(500, "The gateway is misconfigured.", type="api_error",
                           code="configuration_error") from None
    core = await _to_core(request, gateway.settings.max_body_bytes, gateway.streams_body)
    if core.method == "GET" and core.path == "/ws":
        subprotocol = gateway.authorize_admin(core)  # synchronous: nothing to forget to await
        if (core.headers.get("upgrade") or "").lower() != "websocket":
            raise GatewayError(426, "GET /ws needs a WebSocket upgrade ('Upgrade: websocket').",
                               code="upgrade_required", headers={"upgrade": "websocket"})
        # Forward the request (a WebSocket cannot travel back over RPC, only fetch), telling
        # the hub which subprotocol to select; a client cannot set that header itself.
        headers = {name: value for name, value in core.headers.items() if name.lower() != SUBPROTOCOL_HEADER}
        if subprotocol:
            headers[SUBPROTOCOL_HEADER] = subprotocol
        return await env.METRICS_HUB.getByName(HUB_NAME).fetch(workers.Request(request, headers=headers))
    if core.path == REALTIME_PATH and (core.headers.get("upgrade") or "").lower() == "websocket":
        # Loaded on the first session: a Worker that never sees one loads none of it.
        from .realtime import serve

        return await serve(gateway, core)  # the session lives in this invocation
    return await gateway.handle(core)


async def _to_core(request: Any, max_body: int, streams_body: Any = None) -> Request:
    split = urlsplit(str(request.url))
    method = str(request.method).upper()
    headers = Headers(js_headers(request.js_object.headers))
    body = b""
    stream = None
    if streams_body is not None and streams_body(method, split.path or "/"):  # an upload: read as it comes
        stream = _body_chunks(request.js_object.body)
    elif method not in ("GET", "HEAD"):
        declared = headers.get("content-length") or ""
        if declared.isdigit():
            # Refuse a declared oversize body without buffering it; a declared length is
            # framing, so one read of a body within it cannot bring more.
            if int(declared) > max_body:
                await _drain(request)
                raise _too_large(max_body)
            body = await request.bytes()
            if len(body) > max_body:
                raise _too_large(max_body)
        else:  # chunked (no length): read in pieces and stop at the limit, never whole
            body = await _read_capped(request, max_body)
    return Request(
        method=method,
        path=split.path or "/",
        headers=headers,
        body=body,
        query=dict(parse_qsl(split.query, keep_blank_values=True)),
        client_ip=headers.get("cf-connecting-ip"),
        raw_query=split.query,
        stream=stream,
    )


async def _body_chunks(stream: Any) -> AsyncIterator[bytes]:
    if stream is None:
        return
    reader = stream.getReader()
    while True:
        result = await reader.read()
        if result.done:
            return
        yield bytes(result.value.to_bytes())


async def _read_capped(request: Any, max_body: int) -> bytes:
    """A body of unknown length, read chunk by chunk to at most ``max_body`` bytes; past it
    the rest is drained (as :func:`_drain`) and the answer is a 413."""
    stream = request.js_object.body
    if stream is None:
        return b""
    reader = stream.getReader()
    chunks: list[bytes] = []
    seen = 0
    while True:
        result = await reader.read()
        if result.done:
            return b"".join(chunks)
        seen += int(result.value.byteLength)
        if seen > max_body:
            break
        chunks.append(bytes(result.value.to_bytes()))
    chunks.clear()
    try:
        while seen <= DRAIN_LIMIT_BYTES:
            result = await reader.read()
            if result.done:
                break
            seen += int(result.value.byteLength)
        else:
            await reader.cancel()
    except Exception:  # the client went away: the 413 goes out anyway
        log.debug("draining a refused chunked body stopped", exc_info=True)
    raise _too_large(max_body)


async def _drain(request: Any) -> None:
    """Read a refused body to its end and drop it, up to ``DRAIN_LIMIT_BYTES``, before the 413
    goes out: answering while the client still sends makes the runtime close a connection
    with unread data, which resets it, and the client can lose the answer (under wrangler
    dev, about one refused 1.3 MB post in 60). A bigger body is cancelled at the limit."""
    body = request.js_object.body
    if body is None:
        return
    reader = body.getReader()
    seen = 0
    try:
        while seen <= DRAIN_LIMIT_BYTES:
            result = await reader.read()
            if result.done:
                return
            seen += int(result.value.byteLength)
        await reader.cancel()
    except Exception:  # the client went away, or the stream broke: the 413 goes out anyway
        log.debug("draining a refused request body stopped", exc_info=True)


def _too_large(max_body: int) -> GatewayError:
    return GatewayError(413, f"Request body exceeds {max_body} bytes.", code="request_too_large")


def _to_workers(response: Response, scope: RequestScope) -> Any:
    body = response.body
    if isinstance(body, bytes | bytearray):
        return workers.Response(bytes(body) or None, status=response.status, headers=_headers_to_js(response.headers))
    # Stream: return the readable side now and write from a background task, so the client
    # starts reading while chunks are produced (awaiting writes first would deadlock).
    sse = (response.headers.get("content-type") or "").startswith("text/event-stream")
    heartbeat = HEARTBEAT_SECONDS if sse else None
    if isinstance(body, PassThrough):  # the upstream's bytes natively, the core reads a copy
        readable, run = pass_through.respond(body, heartbeat, HEARTBEAT)
        scope.ctx.waitUntil(within(scope, run))
        return workers.Response(readable, status=response.status, headers=_headers_to_js(response.headers))
    stream = js.TransformStream.new()
    scope.ctx.waitUntil(within(scope, _pump(body, stream.writable.getWriter(), heartbeat)))
    return workers.Response(stream.readable, status=response.status, headers=_headers_to_js(response.headers))


def _headers_to_js(headers: dict[str, str]) -> Any:
    # One conversion (a list of pairs -> a JS Array) and a native Headers; given the dict,
    # the SDK would have JavaScript iterate the Python items across the FFI one by one.
    return js.Headers.new(to_js(list(headers.items())))


async def _pump(chunks: AsyncIterator[bytes], writer: Any, heartbeat: float | None = None) -> None:
    """Write ``chunks`` to the response stream until they end or the client leaves.

    The runtime cancels the response stream when it finds the client gone, and the writer's
    ``closed`` promise rejects then: that is watched, so a client that leaves stops the
    stream at once, not at the upstream's next chunk (which a thinking model may be minutes
    away from). The task that writes is then cancelled where it waits, for that chunk
    usually: the core's relay records "aborted" and closes its upstream call on the way out.

    workerd finds a client gone only when it writes to it (a client's FIN is not a
    disconnect to it, and under ``wrangler dev`` no close is), so while an SSE stream's
    upstream is silent, ``heartbeat`` seconds after the last bytes an SSE comment goes out
    (every SSE client skips it), between two events only, again each ``heartbeat``."""
    state = _Written()
    relay = asyncio.ensure_future(_write(chunks, writer, state))
    gone = asyncio.ensure_future(_client_gone(writer))
    beat = asyncio.ensure_future(_heartbeat(writer, state, heartbeat)) if heartbeat else None
    try:
        await asyncio.wait((relay, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for watcher in (gone, beat):
            if watcher is not None:
                watcher.cancel()
        if not relay.done():  # the client left mid-stream (or this task was cancelled)
            log.debug("the client left mid-stream: its upstream call is closed")
            relay.cancel()
            await asyncio.wait((relay,))  # its unwinding: the core's cleanup, the upstream's close
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()  # runs the core's cleanup (upstream close, analytics) if we stopped early
        try:
            await writer.close()
        except Exception:
            log.debug("closing the response stream failed", exc_info=True)


class _Written:
    """What the response stream was last given: when, and whether it ended an SSE event."""

    __slots__ = ("at", "between_events")

    def __init__(self) -> None:
        self.at = asyncio.get_running_loop().time()
        self.between_events = True


async def _write(chunks: AsyncIterator[bytes], writer: Any, state: _Written) -> None:
    loop = asyncio.get_running_loop()
    try:
        async for chunk in chunks:
            state.at = loop.time()
            state.between_events = chunk.endswith((b"\n\n", b"\r\n\r\n"))
            await writer.write(to_js(chunk))  # bytes -> Uint8Array
    except Exception:
        log.warning("streaming the response stopped early (client gone?)", exc_info=True)


async def _client_gone(writer: Any) -> None:
    """Returns when the response stream errors: the runtime cancelled it, the client left.
    (A normal close is ours, after the relay ended: this is cancelled by then.)"""
    try:
        await writer.closed
    except Exception:
        return
    await asyncio.Event().wait()


async def _heartbeat(writer: Any, state: _Written, every: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        idle = loop.time() - state.at
        if idle < every:
            await asyncio.sleep(every - idle)
        elif not state.between_events:  # mid-event: no comment fits in; look again later
            await asyncio.sleep(every)
        else:
            state.at = loop.time()
            try:
                await writer.write(to_js(HEARTBEAT))
            except Exception:  # the stream errored: _client_gone says so
                return
