"""The MCP gateway's settings: ``FLAREGATE_MCP_SERVERS`` (the upstream servers),
``FLAREGATE_MCP_SESSION_SECRET`` (seals session ids) and the ``MCP_*`` knobs.

A server's ``credential_env`` names the variable (a secret) holding its credential, like a
provider's ``api_key_env``; ``config.py`` swaps the name for the value, which the gateway
injects on every upstream request and never shows to a client.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    SecretStr,
    StrictStr,
)

# A server's name is the prefix of its tools' gateway names (``server.tool``): no ".", so
# the first "." of a namespaced name always ends the server part.
SERVER_NAME = r"^[A-Za-z0-9_-]{1,32}$"


class McpServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SERVER_NAME)
    url: str = Field(pattern=r"^https?://", max_length=2048)  # the server's Streamable HTTP endpoint
    credential: SecretStr | None = None  # from credential_env (never in the JSON itself)
    credential_header: str = Field(default="authorization", pattern=r"^[A-Za-z0-9-]{1,64}$")
    timeout_seconds: PositiveFloat = 30.0  # one upstream exchange (a tool call included)
    tools: tuple[StrictStr, ...] | None = None  # exposed tool names (globs); None: all
    prompts: tuple[StrictStr, ...] | None = None  # exposed prompt names (globs); None: all
    resources: tuple[StrictStr, ...] | None = None  # exposed resource URIs and templates (globs); None: all
    # The revision the gateway speaks to the server: "handshake" (initialize, an upstream
    # session: every server speaks it) or "2026-07-28" (sessionless: an envelope per request).
    revision: Literal["handshake", "2026-07-28"] = "handshake"
    price_per_call_usd: float = Field(default=0.0, ge=0)  # what a tools/call costs (budgets)
    # Per tool (globs over the server's own tool names, the first match wins): its price
    # instead of price_per_call_usd.
    tool_prices: dict[StrictStr, NonNegativeFloat] = Field(default_factory=dict, max_length=256)

    def price_of(self, tool: str) -> float:
        """What one call of ``tool`` costs the caller's budgets."""
        for glob, price in self.tool_prices.items():
            if fnmatch.fnmatchcase(tool, glob):
                return price
        return self.price_per_call_usd

    def credential_headers(self) -> dict[str, str]:
        if self.credential is None:
            return {}
        secret = self.credential.get_secret_value()
        if self.credential_header.lower() == "authorization":
            return {"authorization": f"Bearer {secret}"}
        return {self.credential_header.lower(): secret}


class McpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: tuple[McpServerConfig, ...] = ()
    # Seals the session ids (sealing.py); unset: the admin key, else a per-isolate random one
    # (sessions then do not survive another replica or isolate).
    session_secret: SecretStr | None = None
    session_max_age_seconds: int = Field(default=86_400, ge=60)
    list_cache_seconds: float = Field(default=30.0, ge=0)  # each server's tools/list, per isolate
    max_message_bytes: int = Field(default=1_000_000, ge=1024)  # one JSON-RPC message from a client
    max_result_bytes: int = Field(default=16 << 20, ge=1024)  # one upstream answer read whole
    pinning: bool = False  # a tool whose definition changed is hidden until an admin approves it
    # A standalone stream (GET /mcp) with nothing from any server for this long ends; the
    # client opens another (the spec's way), and no connection is held open forever.
    stream_idle_seconds: float = Field(default=300.0, ge=1, le=3600)

    def server(self, name: str) -> McpServerConfig | None:
        return next((s for s in self.servers if s.name == name), None)


VARS = ("FLAREGATE_MCP_SERVERS", "FLAREGATE_MCP_SESSION_SECRET", "MCP_SESSION_MAX_AGE_SECONDS",
        "MCP_LIST_CACHE_SECONDS", "MCP_MAX_MESSAGE_BYTES", "MCP_TOOL_PINNING", "MCP_STREAM_IDLE_SECONDS")


def credential_names(servers_json: Any) -> list[str]:
    """The secret names ``FLAREGATE_MCP_SERVERS`` points at (the Worker reads only known names)."""
    try:
        raw = json.loads(servers_json) if isinstance(servers_json, str) else None
    except ValueError:
        return []
    if not isinstance(raw, list):
        return []
    return [str(s["credential_env"]) for s in raw if isinstance(s, dict) and s.get("credential_env")]


def settings_data(vars: Any) -> dict[str, Any]:
    """The ``McpSettings`` fields found in the variables (ValueError names a bad one)."""
    data: dict[str, Any] = {}
    if vars.get("FLAREGATE_MCP_SERVERS", "").strip():
        try:
            raw = json.loads(vars["FLAREGATE_MCP_SERVERS"])
        except ValueError:
            raise ValueError("FLAREGATE_MCP_SERVERS: not valid JSON") from None
        if not isinstance(raw, list):
            raise ValueError("FLAREGATE_MCP_SERVERS: must be a JSON list of servers")
        servers = []
        for item in raw:
            if isinstance(item, dict) and "credential_env" in item:
                item = dict(item)
                item["credential"] = vars.get(item.pop("credential_env"))
            servers.append(item)
        names = [s.get("name") for s in servers if isinstance(s, dict)]
        if len(set(names)) != len(names):
            raise ValueError("FLAREGATE_MCP_SERVERS: a server name appears twice")
        data["servers"] = servers
    if vars.get("FLAREGATE_MCP_SESSION_SECRET", "").strip():
        data["session_secret"] = vars["FLAREGATE_MCP_SESSION_SECRET"].strip()
    for var, field in (("MCP_SESSION_MAX_AGE_SECONDS", "session_max_age_seconds"),
                       ("MCP_LIST_CACHE_SECONDS", "list_cache_seconds"),
                       ("MCP_MAX_MESSAGE_BYTES", "max_message_bytes"),
                       ("MCP_STREAM_IDLE_SECONDS", "stream_idle_seconds")):
        if vars.get(var, "").strip():
            data[field] = vars[var].strip()
    if vars.get("MCP_TOOL_PINNING", "").strip():
        data["pinning"] = vars["MCP_TOOL_PINNING"].strip().lower() in ("1", "true", "yes", "on")
    return data
