"""The bodies of the two Durable Objects, so the classes in ``src/durable_objects`` stay
declarations: the core objects over DO SQLite, alarms and hibernatable WebSockets.

Both are rebuilt from storage whenever the runtime constructs the object (first use, or
waking from hibernation), so nothing here may live only in memory.
"""

from __future__ import annotations

import logging
from typing import Any

import js
import workers
from pyodide.ffi import to_js

from ...clock import SystemClock
from ...config import ConfigError, Settings, settings_from_vars
from ...objects.metrics_hub import MetricsHub
from ...objects.rate_limiter import RateLimiter
from ...objects.security_store import SecurityStore
from .ports import AlarmScheduler, DurableSql, HibernationBroadcaster, env_vars, plain

log = logging.getLogger("flaregate.edge")

SUBSCRIBER_TAG = "metrics"  # the hibernation tag of dashboard sockets


def rate_limiter(ctx: Any) -> RateLimiter:
    return RateLimiter(DurableSql(ctx.storage.sql), SystemClock())


def check(limiter: RateLimiter, key: Any, policy: Any, cost: Any) -> dict[str, Any]:
    # RPC hands over JS objects (JsDict / JsProxy); the core wants plain values.
    return limiter.check(str(key), plain(policy), float(cost))


# The limits' calls (flaregate.ratelimits.enforcer): lists of plain dicts in, a plain dict out.
def acquire(limiter: RateLimiter, checks: Any) -> dict[str, Any]:
    return limiter.acquire(plain(checks))


def reconcile(limiter: RateLimiter, adjustments: Any) -> dict[str, Any]:
    return limiter.reconcile(plain(adjustments))


def usage(limiter: RateLimiter) -> dict[str, Any]:
    return limiter.usage()


def reset(limiter: RateLimiter, policy: Any = "") -> dict[str, Any]:
    return limiter.reset(str(policy or ""))


def security_store(ctx: Any) -> SecurityStore:
    return SecurityStore(DurableSql(ctx.storage.sql), SystemClock())


def security_op(store: SecurityStore, op: Any, args: Any) -> Any:
    return store.call(str(op), plain(args) or {})


def _tick_seconds(env: Any) -> float:
    try:
        return settings_from_vars(env_vars(env)).metrics_tick_seconds
    except ConfigError as exc:
        log.error("invalid configuration in the metrics hub, using defaults: %s", exc)
        return Settings().metrics_tick_seconds


def close_quietly(ws: Any, code: int, reason: str) -> None:
    """Close a socket; the peer may be gone or the code reserved (1005/1006): ignore."""
    try:
        ws.close(code, reason)
    except Exception:
        pass


class MetricsHubBody:
    def __init__(self, ctx: Any, env: Any) -> None:
        self._ctx = ctx
        self.hub = MetricsHub(
            DurableSql(ctx.storage.sql),
            SystemClock(),
            HibernationBroadcaster(ctx, SUBSCRIBER_TAG),
            AlarmScheduler(ctx.storage),
            _tick_seconds(env),
        )

    def accept(self) -> Any:
        """Accept a dashboard socket with the hibernation API and greet it with a snapshot."""
        client, server = js.WebSocketPair.new().object_values()
        self._ctx.acceptWebSocket(server, to_js([SUBSCRIBER_TAG]))  # tags must be a JS Array
        server.send(self.hub.welcome())
        return workers.Response(None, status=101, web_socket=client)

    def on_message(self, ws: Any, message: Any) -> None:
        # Binary frames arrive as a JS ArrayBuffer: the hub answers those with an error.
        reply = self.hub.reply(message if isinstance(message, str) else b"")
        if reply is not None:
            try:
                ws.send(reply)
            except Exception:
                close_quietly(ws, 1011, "send failed")

    async def publish(self, events: Any) -> int:
        return await self.hub.record(plain(events))
