"""Tool pinning: each tool's definition hash (catalog.definition_hash) is recorded in the
security store (SQLite locally, the Durable Object on the edge, Redis for replicas) the
first time a server lists it, and compared every time the list is fetched again (once
per server per ``MCP_LIST_CACHE_SECONDS`` per isolate: one store call per server).

A definition that is not the approved one (a poisoned or silently edited description)
raises an ``mcp_tool_changed`` hub event and an ``mcp.tool_changed`` webhook, once per new
definition; with ``MCP_TOOL_PINNING`` on the tool is hidden (absent from lists, its calls
refused as unknown) until an admin approves it: ``POST /admin/mcp/tools/{tool}/approve``
with the hash it saw in ``GET /admin/mcp/tools``. Without a security store nothing is
recorded. With pinning on and the store unreachable, the server's tools are withheld
(fail closed): a pin that cannot be checked is not trusted.
"""

from __future__ import annotations

import logging
from typing import Any

from ..observability.analytics import Analytics
from ..ports import Clock, SecurityStoreClient
from ..security.webhooks import WebhookDispatcher
from .catalog import gateway_name
from .jsonrpc import RpcError
from .settings import McpServerConfig
from .upstream import unavailable

log = logging.getLogger("flaregate.mcp")

EVENT = "mcp_tool_changed"
WEBHOOK_EVENT = "mcp.tool_changed"


class Pins:
    def __init__(self, store: SecurityStoreClient | None, pinning: bool, analytics: Analytics,
                 webhooks: WebhookDispatcher, clock: Clock) -> None:
        self.store = store
        self.pinning = pinning
        self._analytics = analytics
        self._webhooks = webhooks
        self._clock = clock

    async def observe(self, server: McpServerConfig, hashes: dict[str, str]) -> set[str]:
        """The server's tools (upstream names) to hide: not the approved definition, with
        pinning on. Raises RpcError when pinning is on and the store cannot answer."""
        if self.store is None or not hashes:
            return set()
        named = {gateway_name(server.name, tool): tool for tool in hashes}
        try:
            held: dict[str, Any] = await self.store.call(
                "mcp_pins.observe", {"tools": {name: hashes[tool] for name, tool in named.items()}})
        except Exception as exc:
            log.warning("MCP tool pins of %s could not be checked: %s", server.name, type(exc).__name__)
            if self.pinning:
                raise unavailable(server.name, "its tool pins could not be checked") from None
            return set()
        for name, pin in held.items():
            if isinstance(pin, dict) and pin.get("changed"):
                data = {"server": server.name, "tool": name, "approved_hash": pin.get("approved"),
                        "seen_hash": pin.get("seen"), "hidden": self.pinning}
                self._analytics.record({"type": EVENT, "ts": self._clock.now(), **data})
                self._webhooks.emit(WEBHOOK_EVENT, data)
        return {named[name] for name in held if name in named} if self.pinning else set()

    async def listing(self) -> list[dict[str, Any]]:
        if self.store is None:
            raise RpcError(0, "no security store")
        return list(await self.store.call("mcp_pins.list", {}))

    async def approve(self, tool: str, seen: str) -> bool:
        if self.store is None:
            return False
        return bool(await self.store.call("mcp_pins.approve", {"tool": tool, "seen": seen}))
