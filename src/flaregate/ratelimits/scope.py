"""Whose limit a request counts against, from the server's view of the request only.

The client never names its own limit key: the gateway key comes from authentication, the
client address from the host (the socket peer locally, ``CF-Connecting-IP`` on the edge)
and is anonymised before use (IPv4 /24, IPv6 /48, by ``flaregate.security.privacy``); a user id
header is read only when a policy names it, and always inside the gateway key's
namespace, so one key cannot touch another key's counters.
"""

from __future__ import annotations

import hashlib
import re

from ..http import Headers
from ..security.privacy import anonymize_ip
from .policies import LimitPolicy

_SAFE_LABEL = re.compile(r"^[A-Za-z0-9._:/-]{1,64}$")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def label(value: str) -> str:
    """A short, safe stand-in for a client-supplied value (a model name)."""
    return value if _SAFE_LABEL.match(value) else "h:" + _digest(value)


def key_partition(key_id: str) -> str:
    return f"key:{key_id}"


def team_partition(team_id: str) -> str:
    return f"team:{team_id}"


def address(policy: LimitPolicy, key_id: str, client_ip: str | None, model: str,
            headers: Headers, team_id: str | None = None, tool: str | None = None) -> tuple[str, str]:
    """(partition, row): the rate-limiter object to ask, and the row inside it.

    A policy scoped by key or user lives in the key's object; one scoped by team in the
    team's (a key in no team: its own); one scoped by client network (and not key) in that
    network's object; one scoped by an MCP tool or server alone in that tool's or server's
    object; one scoped by model alone in the model's. ``tool`` is an MCP tool call's gateway
    name (``server.tool``, known to the gateway's catalog).
    """
    scope = policy.scope
    parts = [policy.name]
    mcp = _mcp_label(scope, tool)
    if "team" in scope:
        partition = team_partition(team_id) if team_id is not None else key_partition(key_id)
    elif "key" in scope or "user" in scope:
        partition = key_partition(key_id)
        if "ip" in scope:
            parts.append("ip:" + anonymize_ip(client_ip or ""))
    elif "ip" in scope:
        partition = "ip:" + anonymize_ip(client_ip or "")
    elif mcp is not None:
        partition, mcp = mcp, None
    else:
        partition = "model:" + label(model)
    if mcp is not None:
        parts.append(mcp)
    if "model" in scope and not partition.startswith("model:"):
        parts.append("model:" + label(model))
    if "user" in scope:
        assert policy.user_header is not None
        user = headers.get(policy.user_header)
        # No header: the key's anonymous users share one row. Values are hashed, never kept.
        parts.append("user:" + (_digest(user) if user else "-"))
    return partition, "|".join(parts)


def _mcp_label(scope: tuple[str, ...], tool: str | None) -> str | None:
    """``mcp:<server>`` or ``mcp:<server.tool>`` for a policy scoped by MCP server or tool
    (the tool names its server, so both scopes together are the tool's)."""
    if tool is None or ("mcp_tool" not in scope and "mcp_server" not in scope):
        return None
    return "mcp:" + label(tool if "mcp_tool" in scope else tool.split(".", 1)[0])
