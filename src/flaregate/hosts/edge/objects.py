"""The bodies of the two Durable Objects, so the classes in ``src/durable_objects`` stay
declarations: the core objects over DO SQLite, alarms and hibernatable WebSockets.

Both are rebuilt from storage whenever the runtime constructs the object (first use, or
waking from hibernation), so nothing here may live only in memory.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import js
import workers
from pyodide.ffi import to_js

from ...clock import SystemClock
from ...config import ConfigError, Settings, settings_from_vars
from ...hub.aggregator import MAX_CLIENT_FRAME, MetricsHub
from ...observability.export import build_exporters
from ...observability.logs import configure_logging
from ...observability.request_bodies import log_secrets
from ...ratelimits.limiter import RateLimiter
from ...security.admin import SUBPROTOCOL
from ...security.store import SecurityStore
from . import event_loop
from .console_log import ConsoleHandler
from .isolate_stats import IsolateStats
from .ports import (
    SCOPE_VAR,
    AlarmScheduler,
    DurableSql,
    FetchTransport,
    HibernationBroadcaster,
    PeerShards,
    env_vars,
)

if TYPE_CHECKING:
    from ...cache.semantic.index import SqlSemanticIndex

log = logging.getLogger("flaregate.edge")

SUBSCRIBER_TAG = "metrics"  # the hibernation tag of dashboard sockets
# Set by the Worker on the request it forwards to the hub after the admin check: the
# subprotocol the 101 must select (never the client's own header, which carries the key).
SUBPROTOCOL_HEADER = "x-flaregate-subprotocol"

# Settings per isolate, parsed (and logging configured) once per set of variables.
_settings: tuple[tuple[tuple[str, str], ...], Settings] | None = None


def _prepare_isolate() -> None:
    # A Durable Object may live in an isolate no Worker request has run in (always, on
    # Cloudflare): its loop gets the same scheduling as the Worker's (event_loop.py).
    event_loop.install(SCOPE_VAR)


def rate_limiter(ctx: Any) -> RateLimiter:
    _prepare_isolate()
    return RateLimiter(DurableSql(ctx.storage.sql), SystemClock())


def security_store(ctx: Any) -> SecurityStore:
    _prepare_isolate()
    return SecurityStore(DurableSql(ctx.storage.sql), SystemClock())


def semantic_index(ctx: Any) -> SqlSemanticIndex:
    # Only an isolate that hosts an index loads it.
    from ...cache.semantic.index import SqlSemanticIndex

    _prepare_isolate()
    return SqlSemanticIndex(DurableSql(ctx.storage.sql), SystemClock())


def settings_for(env: Any) -> Settings:
    """The isolate's settings: parsed once per set of variables, logging configured then.
    A bad configuration falls back to the defaults (logged) so the hub keeps counting."""
    global _settings
    found = env_vars(env)
    key = tuple(sorted(found.items()))
    if _settings is None or _settings[0] != key:
        try:
            settings = settings_from_vars(found)
        except ConfigError as exc:
            log.error("invalid configuration in the metrics hub, using defaults: %s", exc)
            settings = Settings()
        configure_logging(settings, handler=ConsoleHandler())
        _settings = (key, settings)
    return _settings[1]


def close_quietly(ws: Any, code: int, reason: str) -> None:
    """Close a socket; the peer may be gone or the code reserved (1005/1006): ignore."""
    try:
        ws.close(code, reason)
    except Exception:
        pass


def frame_size(message: Any) -> int:
    """Bytes in a client frame: text (str) or binary (a JS ArrayBuffer's byteLength)."""
    if isinstance(message, str):
        return len(message.encode())
    size = getattr(message, "byteLength", 0)
    return size if isinstance(size, int) else 0


class MetricsHubBody:
    def __init__(self, ctx: Any, env: Any) -> None:
        _prepare_isolate()
        settings = settings_for(env)
        self._ctx = ctx
        self.hub = MetricsHub(
            DurableSql(ctx.storage.sql, ctx.storage),
            SystemClock(),
            HibernationBroadcaster(ctx, SUBSCRIBER_TAG),
            AlarmScheduler(ctx.storage),
            settings.metrics_tick_seconds,
            latency_target_ms=settings.health_latency_target_ms,
            host_stats=IsolateStats(),
            log_retention=settings.request_logs.retention(),
            log_unauthenticated_max_records=settings.request_logs.unauthenticated_max_records,
            log_max_bytes=settings.request_logs.max_bytes,
            log_sample_info_per_second=settings.request_logs.sample_info_per_second,
            exporters=build_exporters(settings, FetchTransport(), SystemClock()),
            log_secrets=log_secrets(settings) if settings.request_logs.bodies != "off" else None,
            # Only the first shard ever holds sockets; it asks the others for their parts.
            peers=PeerShards(env, settings.shards.hub_shards) if settings.shards.hub_shards > 1 else None,
            peer_count=settings.shards.hub_shards - 1,
        )

    async def accept(self, request: Any = None) -> Any:
        """Accept a dashboard socket with the hibernation API, send it the greeting (hello,
        snapshot) and select the subprotocol the Worker chose, if any."""
        client, server = js.WebSocketPair.new().object_values()
        self._ctx.acceptWebSocket(server, to_js([SUBSCRIBER_TAG]))  # tags must be a JS Array
        server.send(self.hub.hello())
        server.send(await self.hub.merged_message("snapshot"))
        headers = {}
        chosen = request.headers.get(SUBPROTOCOL_HEADER) if request is not None else None
        if chosen == SUBPROTOCOL:  # only the one protocol we speak, never a client-chosen value
            headers["sec-websocket-protocol"] = SUBPROTOCOL
        return workers.Response(None, status=101, web_socket=client, headers=headers)

    async def on_message(self, ws: Any, message: Any) -> None:
        if frame_size(message) > MAX_CLIENT_FRAME:
            close_quietly(ws, 1009, "message too big")  # as the local host does
            return
        # Binary frames arrive as a JS ArrayBuffer: the hub answers those with an error.
        reply = await self.hub.merged_reply(message if isinstance(message, str) else b"")
        if reply is not None:
            try:
                ws.send(reply)
            except Exception:
                close_quietly(ws, 1011, "send failed")
