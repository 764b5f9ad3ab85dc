"""The 2026-07-28 revision (sessionless): every request carries its own envelope.

No ``initialize`` and no ``Mcp-Session-Id``: each POST holds one request whose
``params._meta`` names the protocol revision, the client's capabilities and (optionally)
its identity, mirrored by the ``MCP-Protocol-Version``, ``Mcp-Method`` and (for a tool,
prompt or resource) ``Mcp-Name`` headers. ``server/discover`` says which revisions a
server speaks. Results carry ``resultType`` (and the lists ``cacheScope`` and ``ttlMs``);
errors travel with an HTTP status of their own (400 for bad params, 404 for an unknown
method). A client cancels by closing the response; there is no back channel.

This module holds what differs from the handshake revisions, as the official ``mcp`` SDK
2.3.0 (``mcp.shared.inbound``, ``mcp.server._streamable_http_modern``) has it: the
envelope check (in the SDK's order: envelope, headers, then version), the envelope taken
off before a message goes to a handshake-era server or put on for a 2026-07-28 one (a
server's ``revision`` setting), and the shape of results and error statuses.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from .jsonrpc import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, RpcError

MODERN_VERSIONS = ("2026-07-28",)
HEADER_MISMATCH = -32020  # mcp_types.jsonrpc.HEADER_MISMATCH
UNSUPPORTED_PROTOCOL_VERSION = -32022  # mcp_types.jsonrpc.UNSUPPORTED_PROTOCOL_VERSION
_ENVELOPE = "io.modelcontextprotocol/"  # the reserved prefix of the envelope's _meta keys
PROTOCOL_VERSION_KEY = _ENVELOPE + "protocolVersion"
CLIENT_CAPABILITIES_KEY = _ENVELOPE + "clientCapabilities"
SERVER_INFO_KEY = _ENVELOPE + "serverInfo"
CLIENT_INFO_KEY = _ENVELOPE + "clientInfo"
CLIENT_INFO = {"name": "flaregate-mcp-gateway", "version": "1"}
NAME_BEARING = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
# The HTTP status of an error answer at this revision (mcp.shared.inbound.ERROR_CODE_HTTP_STATUS).
_ERROR_STATUS = {PARSE_ERROR: 400, INVALID_REQUEST: 400, INVALID_PARAMS: 400, HEADER_MISMATCH: 400,
                 UNSUPPORTED_PROTOCOL_VERSION: 400, METHOD_NOT_FOUND: 404}
# The lists a client may cache: (seconds it may keep one; None: the list cache's TTL).
_CACHEABLE = frozenset({"tools/list", "resources/list", "resources/templates/list", "prompts/list",
                        "resources/read"})
_B64 = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")
_HEADER_SAFE = re.compile(r"^[\x20-\x7E]*$")


def is_modern(version_header: str | None) -> bool:
    return version_header in MODERN_VERSIONS


def unsupported(requested: Any, handshake: tuple[str, ...]) -> RpcError:
    """-32022 naming every revision served; the SDK's ``mode="auto"`` falls back to the
    handshake when the list holds one of those."""
    return RpcError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version", status=400,
                    data={"supported": [*handshake, *MODERN_VERSIONS],
                          "requested": requested[:32] if isinstance(requested, str) else ""})


def check_envelope(message: Mapping[str, Any], headers: Mapping[str, str],
                   handshake: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """(the revision, the client's capabilities) of a request's envelope, or the
    RpcError the SDK's own server gives for it."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, Mapping) else None
    if not isinstance(meta, Mapping):
        raise RpcError(INVALID_PARAMS, f"params._meta must be an object carrying {PROTOCOL_VERSION_KEY!r} and "
                       f"{CLIENT_CAPABILITIES_KEY!r} (the 2026-07-28 per-request envelope).", status=400)
    missing = [k for k in (PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY) if k not in meta]
    if missing:
        raise RpcError(INVALID_PARAMS, f"params._meta is missing the envelope key(s): {', '.join(missing)}",
                       status=400)
    version = meta[PROTOCOL_VERSION_KEY]
    if headers.get("mcp-protocol-version") != version:
        raise RpcError(HEADER_MISMATCH, "MCP-Protocol-Version header does not match the request envelope's "
                       "protocol version", status=400)
    method = message.get("method")
    if headers.get("mcp-method") != method:
        raise RpcError(HEADER_MISMATCH, "Mcp-Method header does not match the request body's method", status=400)
    name_key = NAME_BEARING.get(str(method))
    if name_key is not None and isinstance(params, Mapping) and params.get(name_key) is not None:
        if decode_header(headers.get("mcp-name")) != params.get(name_key):
            raise RpcError(HEADER_MISMATCH, f"Mcp-Name header does not match the request body's {name_key!r}",
                           status=400)
    if not isinstance(version, str) or version not in MODERN_VERSIONS:
        raise unsupported(version, handshake)
    capabilities = meta[CLIENT_CAPABILITIES_KEY]
    return version, dict(capabilities) if isinstance(capabilities, Mapping) else {}


def decode_header(value: str | None) -> str | None:
    """An ``Mcp-Name`` value: verbatim, or ``=?base64?...?=`` decoded (None if malformed)."""
    if value is None:
        return None
    match = _B64.fullmatch(value)
    if match is None:
        return value
    try:
        decoded = base64.b64decode(match["payload"], validate=True)
        if base64.b64encode(decoded).decode("ascii") != match["payload"]:
            return None
        return decoded.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def encode_header(value: str) -> str:
    """An ``Mcp-Name`` value as the SDK writes it: verbatim when it survives a header,
    else ``=?base64?...?=``."""
    if _HEADER_SAFE.fullmatch(value) and value == value.strip() and not _B64.fullmatch(value):
        return value
    return f"=?base64?{base64.b64encode(value.encode('utf-8')).decode('ascii')}?="


def with_envelope(message: Mapping[str, Any], version: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A request as the gateway sends it to a 2026-07-28 server: (the message with its
    envelope, the routing headers). The gateway declares no client capability upstream
    (this revision has no back channel)."""
    params = dict(message.get("params") or {})
    found = params.get("_meta")
    meta: dict[str, Any] = found if isinstance(found, dict) else {}
    params["_meta"] = {**meta, PROTOCOL_VERSION_KEY: version, CLIENT_CAPABILITIES_KEY: {},
                       CLIENT_INFO_KEY: CLIENT_INFO}
    method = str(message.get("method"))
    headers = {"mcp-protocol-version": version, "mcp-method": method}
    name_key = NAME_BEARING.get(method)
    if name_key is not None and isinstance(params.get(name_key), str):
        headers["mcp-name"] = encode_header(params[name_key])
    return {**message, "params": params}, headers


def without_envelope(message: dict[str, Any]) -> dict[str, Any]:
    """The message as a handshake-era server takes it: the envelope's ``_meta`` keys gone
    (such a server refuses them), the rest of ``_meta`` (a progress token) kept."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return message
    kept = {k: v for k, v in meta.items() if not (isinstance(k, str) and k.startswith(_ENVELOPE))}
    rest = {k: v for k, v in params.items() if k != "_meta"} if isinstance(params, dict) else {}
    return {**message, "params": {**rest, **({"_meta": kept} if kept else {})}}


def shaped(method: str, value: Mapping[str, Any], ttl_seconds: float) -> dict[str, Any]:
    """A result as this revision has it: ``resultType`` always; a list (and a read
    resource) also says it is for this key only (``cacheScope: private``, permissions
    shape it) and how long it may be kept (the tools list: the gateway's own cache TTL)."""
    out = dict(value)
    out.setdefault("resultType", "complete")
    if method in _CACHEABLE:
        out.setdefault("cacheScope", "private")
        out.setdefault("ttlMs", int(ttl_seconds * 1000) if method == "tools/list" else 0)
    return out


def error_status(exc: RpcError) -> int:
    """The HTTP status of an error at this revision (the gateway's own 401/403/413/429 kept)."""
    return exc.status if exc.status >= 400 else _ERROR_STATUS.get(exc.code, exc.status)
