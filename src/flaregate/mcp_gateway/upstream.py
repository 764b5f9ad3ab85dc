"""The gateway as an MCP client of each upstream server, over the hosts' upstream HTTP
port (Streamable HTTP: one POST per message; the answer JSON, or SSE events until the
response to the request arrives).

Every request carries the server's credential (injected here, never from a client), the
negotiated ``MCP-Protocol-Version``, the upstream ``Mcp-Session-Id`` and the trace headers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..ports import UpstreamError, UpstreamResponse, UpstreamTransport
from ..sse_buffer import EventBuffer, parse_event, split_events
from . import modern as era
from .jsonrpc import INTERNAL_ERROR, UPSTREAM_UNAVAILABLE, Id, RpcError, encode
from .settings import McpServerConfig

# The revision the gateway asks its upstream servers for (the newest reachable by the
# initialize handshake, as the SDK names it: LATEST_HANDSHAKE_VERSION).
UPSTREAM_PROTOCOL_VERSION = "2025-11-25"
_ACCEPT = "application/json, text/event-stream"
_CLIENT_INFO = {"name": "flaregate-mcp-gateway", "version": "1"}


class SessionGone(Exception):
    """The upstream answered 404 to a request carrying its session id: the session is gone
    (expired, or the server restarted); a new one must be initialised."""


@dataclass(slots=True)
class UpstreamSession:
    session_id: str | None  # None: the server runs without sessions (stateless)
    protocol_version: str


def unavailable(server: str, why: str) -> RpcError:
    return RpcError(UPSTREAM_UNAVAILABLE, f"MCP server '{server}' is unavailable: {why}")


class Exchange:
    """One upstream answer: a single JSON message, or an SSE stream of messages."""

    def __init__(self, server: McpServerConfig, response: UpstreamResponse, max_bytes: int) -> None:
        self.server = server
        self.response = response
        self.max_bytes = max_bytes
        ctype = response.headers.get("content-type", "").lower()
        self.streamed = ctype.startswith("text/event-stream")
        self.bytes_read = 0

    async def messages(self) -> AsyncIterator[bytes]:
        """Each JSON-RPC message of the answer, as its raw JSON bytes."""
        if not self.streamed:
            body = await self.response.read()
            self.bytes_read += len(body)
            yield body
            return
        buffer = EventBuffer(self.max_bytes)
        async for chunk in self.response.aiter_bytes():
            self.bytes_read += len(chunk)
            region = buffer.feed(chunk)
            if region:
                for raw in split_events(region):
                    name, data = parse_event(raw)
                    if data and name in (None, "message"):
                        yield data.encode()

    async def answer(self, id: Id) -> dict[str, Any]:
        """The response to request ``id`` (notifications before it are dropped: only
        internal exchanges, initialize and listings, read answers whole)."""
        try:
            async for raw in self.messages():
                try:
                    message = json.loads(raw)
                except ValueError:
                    raise unavailable(self.server.name, "it sent malformed JSON") from None
                if isinstance(message, dict) and message.get("id") == id and ("result" in message or "error" in message):
                    return message
        except UpstreamError as exc:
            raise unavailable(self.server.name, f"the answer broke off ({exc})") from None
        finally:
            await self.response.aclose()
        raise unavailable(self.server.name, "it ended its answer without a response")


class UpstreamClient:
    def __init__(self, transport: UpstreamTransport, max_result_bytes: int) -> None:
        self._transport = transport
        self._max = max_result_bytes

    async def post(self, server: McpServerConfig, message: Mapping[str, Any], session: UpstreamSession | None,
                   trace: Mapping[str, str]) -> Exchange | None:
        """Send one message; the answer (None: 202, a notification accepted). Raises
        SessionGone on a 404 to a session, RpcError -32002 when unreachable or refusing."""
        headers = {"content-type": "application/json", "accept": _ACCEPT, **trace, **server.credential_headers()}
        sessionless = session is not None and era.is_modern(session.protocol_version)
        if sessionless:
            assert session is not None
            if "method" not in message or "id" not in message:
                return None  # no client notifications or answers at 2026-07-28 (a cancel: closing the stream)
            message, routing = era.with_envelope(message, session.protocol_version)
            headers.update(routing)
        elif session is not None:
            headers["mcp-protocol-version"] = session.protocol_version
            if session.session_id:
                headers["mcp-session-id"] = session.session_id
        try:
            response = await self._transport.send("POST", server.url, headers, encode(message), server.timeout_seconds)
        except UpstreamError as exc:
            raise unavailable(server.name, str(exc) or type(exc).__name__) from None
        status = response.status
        if status == 200:
            return Exchange(server, response, self._max)
        if sessionless and status in (400, 404) and response.headers.get("content-type", "").lower().startswith(
                "application/json"):
            return Exchange(server, response, self._max)  # an error answer travels with its own status there
        await _drain(response)
        if status == 202:
            return None
        if status == 404 and session is not None and session.session_id:
            raise SessionGone(server.name)
        if status in (401, 403):
            raise unavailable(server.name, f"it refused the gateway's credential ({status})")
        raise unavailable(server.name, f"it answered HTTP {status}")

    async def initialize(self, server: McpServerConfig, trace: Mapping[str, str],
                         capabilities: Mapping[str, Any] | None = None) -> UpstreamSession:
        """A new upstream session: ``initialize`` (declaring what the client can answer),
        then ``notifications/initialized``. A 2026-07-28 server has no session: nothing to
        ask, every request carries its envelope."""
        if server.revision != "handshake":
            return UpstreamSession(None, server.revision)
        request = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                   "params": {"protocolVersion": UPSTREAM_PROTOCOL_VERSION, "capabilities": dict(capabilities or {}),
                              "clientInfo": _CLIENT_INFO}}
        exchange = await self.post(server, request, None, trace)
        if exchange is None:
            raise unavailable(server.name, "it did not answer initialize")
        session_id = exchange.response.headers.get("mcp-session-id")
        answer = await exchange.answer(0)
        result = answer.get("result")
        if not isinstance(result, dict):
            raise unavailable(server.name, "initialize failed: " + _error_text(answer))
        version = result.get("protocolVersion")
        session = UpstreamSession(session_id or None, version if isinstance(version, str) else UPSTREAM_PROTOCOL_VERSION)
        ack = await self.post(server, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session, trace)
        if ack is not None:
            await _drain(ack.response)
        return session

    async def request(self, server: McpServerConfig, method: str, params: Mapping[str, Any], id: Id,
                      session: UpstreamSession, trace: Mapping[str, str]) -> dict[str, Any]:
        """One request answered whole (its ``result``), RpcError for an error answer."""
        exchange = await self.post(server, {"jsonrpc": "2.0", "id": id, "method": method, "params": dict(params)},
                                   session, trace)
        if exchange is None:
            raise unavailable(server.name, f"it did not answer {method}")
        answer = await exchange.answer(id)
        result = answer.get("result")
        if isinstance(result, dict):
            return result
        error = answer.get("error")
        if isinstance(error, dict) and isinstance(error.get("code"), int):
            raise RpcError(error["code"], f"MCP server '{server.name}': {str(error.get('message', ''))[:500]}")
        raise RpcError(INTERNAL_ERROR, f"MCP server '{server.name}' answered {method} with neither result nor error")

    async def listen(self, server: McpServerConfig, session: UpstreamSession, trace: Mapping[str, str],
                     idle_seconds: float) -> UpstreamResponse | None:
        """The server's standalone stream for the session (GET), or None: it offers none
        (405), the session is gone (404), one is open already (409), or it is down."""
        if not session.session_id:
            return None  # a stateless server has no session to stream for
        headers = {"accept": "text/event-stream", "mcp-session-id": session.session_id,
                   "mcp-protocol-version": session.protocol_version, **trace, **server.credential_headers()}
        try:
            response = await self._transport.send("GET", server.url, headers, b"", idle_seconds)
        except UpstreamError:
            return None
        if response.status == 200 and response.headers.get("content-type", "").lower().startswith("text/event-stream"):
            return response
        await _drain(response)
        return None

    async def terminate(self, server: McpServerConfig, session: UpstreamSession, trace: Mapping[str, str]) -> None:
        """End an upstream session (DELETE), best effort."""
        if not session.session_id:
            return
        headers = {"mcp-session-id": session.session_id, "mcp-protocol-version": session.protocol_version,
                   **trace, **server.credential_headers()}
        try:
            await _drain(await self._transport.send("DELETE", server.url, headers, b"", server.timeout_seconds))
        except UpstreamError:
            pass


def _error_text(answer: Mapping[str, Any]) -> str:
    error = answer.get("error")
    return str(error.get("message", "")) if isinstance(error, dict) else "no result"


async def _drain(response: UpstreamResponse) -> None:
    try:
        await response.aclose()
    except Exception:  # an answer we do not read: nothing to lose
        pass
