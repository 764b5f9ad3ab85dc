"""The aggregated tool list: each server's ``tools/list``, cached per isolate for
``MCP_LIST_CACHE_SECONDS``, presented under namespaced names.

A tool ``search`` of server ``github`` is ``github.search`` at the gateway (MCP tool names
allow ``A-Z a-z 0-9 _ - .``, and server names have no ``.``, so the first ``.`` splits a
name back). The permission globs are written over the same ``server.tool`` names.
A server that cannot be listed is remembered as down for a few seconds (its tools leave
the list; its calls fail with -32002) so a dead server does not cost every listing a
timeout.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from ..ports import Clock
from ..security.permissions import allows
from .jsonrpc import RpcError
from .settings import McpServerConfig

MAX_PAGES = 20  # a server's tools/list pages read at most
_DOWN_SECONDS = 5.0
_TOOL_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")

ListFetcher = Callable[[McpServerConfig, str | None], Awaitable[dict[str, Any]]]
# The pins' verdict on a fresh list: the tools (upstream names) to hide.
PinCheck = Callable[[McpServerConfig, dict[str, str]], Awaitable[set[str]]]


def gateway_name(server: str, tool: str) -> str:
    return f"{server}.{tool}"


def split_name(name: str) -> tuple[str, str] | None:
    server, dot, tool = name.partition(".")
    return (server, tool) if dot and server and tool else None


# Resource URIs (and templates) wrapped so the server is recoverable and two servers' URIs
# never collide: flaregate://<server>/<the URI percent-encoded>. A template's {variables}
# stay as they are, so a client expands the wrapped template like the original.
URI_PREFIX = "flaregate://"


def wrap_uri(server: str, uri: str, template: bool = False) -> str:
    return f"{URI_PREFIX}{server}/{quote(uri, safe='{}' if template else '')}"


def unwrap_uri(uri: str) -> tuple[str, str] | None:
    if not uri.startswith(URI_PREFIX):
        return None
    server, slash, rest = uri[len(URI_PREFIX):].partition("/")
    return (server, unquote(rest)) if slash and server and rest else None


def definition_hash(tool: Mapping[str, Any]) -> str:
    """What pinning compares: the tool's definition as the model sees it (name, title,
    description, schemas, annotations), canonical JSON, SHA-256."""
    fields = {k: tool.get(k) for k in ("name", "title", "description", "inputSchema", "outputSchema", "annotations")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(slots=True)
class ServerTools:
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)  # upstream name -> definition
    hashes: dict[str, str] = field(default_factory=dict)
    held: dict[str, dict[str, Any]] = field(default_factory=dict)  # hidden by pinning until approved
    expires: float = 0.0
    error: str | None = None  # set: the server is down


class Catalog:
    def __init__(self, servers: tuple[McpServerConfig, ...], clock: Clock, ttl: float, fetch: ListFetcher,
                 pins: PinCheck | None = None) -> None:
        self._servers = servers
        self._pins = pins
        self._clock = clock
        self._ttl = ttl
        self._fetch = fetch
        self._cache: dict[str, ServerTools] = {}

    def exposed(self, server: McpServerConfig, tool: str) -> bool:
        return allows(list(server.tools) if server.tools is not None else None, tool)

    async def tools(self, server: McpServerConfig, session_key: str | None) -> ServerTools:
        """The server's exposed tools (from the cache while fresh)."""
        now = self._clock.monotonic()
        cached = self._cache.get(server.name)
        if cached is not None and now < cached.expires:
            return cached
        entry = ServerTools()
        try:
            cursor: str | None = None
            for _ in range(MAX_PAGES):
                page = await self._fetch(server, cursor)
                for tool in page.get("tools") or ():
                    name = tool.get("name") if isinstance(tool, dict) else None
                    if (isinstance(name, str) and 0 < len(name) <= 128 and set(name) <= _TOOL_NAME_CHARS
                            and self.exposed(server, name)):
                        entry.tools[name] = tool
                        entry.hashes[name] = definition_hash(tool)
                cursor = page.get("nextCursor")
                if not isinstance(cursor, str) or not cursor:
                    break
            if self._pins is not None:
                for name in await self._pins(server, entry.hashes):
                    entry.held[name] = entry.tools.pop(name)
            entry.expires = now + self._ttl
        except RpcError as exc:
            entry = ServerTools(error=exc.message, expires=now + min(self._ttl, _DOWN_SECONDS))
        self._cache[server.name] = entry
        return entry

    def cached(self) -> dict[str, ServerTools]:
        return dict(self._cache)

    def forget(self, server: str | None = None) -> None:
        if server is None:
            self._cache.clear()
        else:
            self._cache.pop(server, None)
