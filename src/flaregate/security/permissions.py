"""One permission schema for every holder (a stored key, its team): which model aliases,
API paths, MCP servers and MCP tools it may reach.

Each list holds names or ``fnmatch`` globs; ``None`` means unrestricted. A holder inside
another (a key inside its team) is allowed a name only if both allow it, so what the inner
one sets can narrow the outer one and never widen it. MCP tools are named
``server.tool`` (the gateway's namespaced name), so ``github.*`` allows all of one server.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, StrictStr


def allows(patterns: list[str] | None, name: str) -> bool:
    """Whether ``name`` matches one of ``patterns`` (``None``: everything)."""
    return patterns is None or any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


class Permissions(BaseModel):
    """What a holder may reach; ``None`` means unrestricted."""

    model_config = ConfigDict(extra="forbid")

    allowed_models: list[StrictStr] | None = Field(default=None, max_length=256)  # aliases, globs allowed
    allowed_routes: list[StrictStr] | None = Field(default=None, max_length=64)  # paths, globs allowed
    allowed_mcp_servers: list[StrictStr] | None = Field(default=None, max_length=256)  # server names, globs
    allowed_mcp_tools: list[StrictStr] | None = Field(default=None, max_length=1024)  # "server.tool" globs

    def allows_model(self, model: str) -> bool:
        return allows(self.allowed_models, model)

    def allows_route(self, path: str) -> bool:
        return allows(self.allowed_routes, path)

    def allows_mcp_server(self, server: str) -> bool:
        return allows(self.allowed_mcp_servers, server)

    def allows_mcp_tool(self, server: str, tool: str) -> bool:
        return allows(self.allowed_mcp_servers, server) and allows(self.allowed_mcp_tools, f"{server}.{tool}")


def all_allow(holders: Iterable[Permissions], check: str, *names: str) -> bool:
    """Whether every holder (a key and its team, say) passes ``check`` (``"allows_model"``, ...)."""
    return all(getattr(holder, check)(*names) for holder in holders)
