"""JSON-RPC 2.0 as MCP uses it: the error codes the spec names, the message shapes, and
the answers the gateway writes itself (JSON, or one SSE ``message`` event)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..http import Response

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Implementation-defined server errors (-32000..-32099).
UPSTREAM_UNAVAILABLE = -32002  # the MCP server holding the tool could not be reached
RATE_LIMITED = -32029  # a limit or budget refused the call (the HTTP answer says which, 429)
UNSUPPORTED_PROTOCOL_VERSION = -32022  # as the SDK names it (mcp_types.jsonrpc)
BLOCKED = -32030  # a guardrail policy refused the call

Id = str | int | None


class RpcError(Exception):
    """A JSON-RPC error answer (``status``: the HTTP status it travels with)."""

    def __init__(self, code: int, message: str, *, status: int = 200, data: Any = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.data = data
        self.headers = dict(headers or {})

    def payload(self, id: Id) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": id, "error": error}


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def result(id: Id, value: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return Response(200, {"content-type": "application/json", **(headers or {})},
                    encode({"jsonrpc": "2.0", "id": id, "result": value}))


def error_response(exc: RpcError, id: Id, headers: Mapping[str, str] | None = None) -> Response:
    return Response(exc.status, {"content-type": "application/json", **(headers or {}), **exc.headers},
                    encode(exc.payload(id)))


def sse_event(message: Mapping[str, Any] | bytes) -> bytes:
    data = message if isinstance(message, bytes) else encode(message)
    return b"event: message\ndata: " + data + b"\n\n"


def valid_id(value: Any) -> bool:
    return (isinstance(value, str) and len(value) <= 256) or (isinstance(value, int) and not isinstance(value, bool))


def check_message(message: Any) -> dict[str, Any]:
    """A single JSON-RPC message from a client, or RpcError -32600 (a batch is refused: the
    2025-06-18 and later revisions dropped JSON-RPC batching)."""
    if isinstance(message, list):
        raise RpcError(INVALID_REQUEST, "JSON-RPC batches are not supported (MCP 2025-06-18 and later "
                       "removed batching): send one message per request.", status=400)
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, "Not a JSON-RPC 2.0 message (an object with \"jsonrpc\": \"2.0\").",
                       status=400)
    if "method" in message:
        if not isinstance(message["method"], str) or not message["method"] or len(message["method"]) > 128:
            raise RpcError(INVALID_REQUEST, "\"method\" must be a non-empty string.", status=400)
        if "id" in message and not valid_id(message["id"]):
            raise RpcError(INVALID_REQUEST, "\"id\" must be a string or an integer.", status=400)
        params = message.get("params")
        if params is not None and not isinstance(params, dict):
            raise RpcError(INVALID_PARAMS, "\"params\" must be an object.", status=400)
        return message
    if "id" in message and ("result" in message or "error" in message):
        return message  # a client's answer to a server-to-client request
    raise RpcError(INVALID_REQUEST, "A JSON-RPC message needs \"method\" (a request or notification) "
                   "or \"result\"/\"error\" (a response).", status=400)
