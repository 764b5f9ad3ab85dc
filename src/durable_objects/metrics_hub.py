"""The MetricsHub Durable Object: the aggregator and WebSocket hub; with ``HUB_SHARDS`` > 1
one of N shards ("global", "shard-1", ...), the first holding the sockets.

Its alarm drives both the metrics ticks and the retention compaction (one alarm slot;
the hub keeps the earliest wake-up), so no cron trigger is needed."""

from typing import Any

from workers import DurableObject

from flaregate.hosts.edge import objects
from flaregate.hosts.edge.rpc import json_method


class MetricsHub(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self._body = objects.MetricsHubBody(self.ctx, self.env)

    async def fetch(self, request: Any) -> Any:  # GET /ws, already authorised by the Worker
        return await self._body.accept(request)

    async def webSocketMessage(self, ws: Any, message: Any) -> None:
        await self._body.on_message(ws, message)

    async def webSocketClose(self, ws: Any, code: int, reason: str, wasClean: bool) -> None:
        objects.close_quietly(ws, code, reason)

    async def webSocketError(self, ws: Any, error: Any) -> None:
        objects.close_quietly(ws, 1011, "error")

    async def alarm(self, alarm_info: Any = None) -> None:
        await self._body.hub.alarm()

    # RPC from the Worker, JSON in and out (hosts/edge/rpc.py).
    @json_method
    async def publish(self, events: list[dict[str, Any]]) -> int:
        return await self._body.hub.record(events)

    @json_method
    async def snapshot(self) -> dict[str, Any]:
        return self._body.hub.snapshot()

    @json_method
    async def health(self) -> dict[str, Any]:
        return self._body.hub.health_summary()

    @json_method
    async def analytics(self, window: str | None = None) -> dict[str, Any]:
        return self._body.hub.analytics(str(window) if window else None)

    @json_method
    async def prometheus(self) -> str:
        return self._body.hub.prometheus()

    @json_method
    async def parts(self, view: str, arg: str | None = None) -> dict[str, Any]:
        return self._body.hub.parts(str(view), str(arg) if arg else None)

    @json_method
    async def logs(self, params: dict[str, str]) -> dict[str, Any]:
        return self._body.hub.logs.answer(params)
