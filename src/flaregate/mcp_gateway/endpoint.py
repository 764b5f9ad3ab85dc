"""``/mcp``: the MCP endpoint (Streamable HTTP: the ``initialize`` revisions 2024-11-05 to
2025-11-25, and the sessionless 2026-07-28 one, see modern.py), in front of the servers
``FLAREGATE_MCP_SERVERS`` names.

One POST is one JSON-RPC message. The gateway answers ``initialize``, ``ping`` and
``tools/list`` itself (the list aggregated from the servers' cached lists, the caller's
permissions applied) and proxies ``tools/call`` to the server that holds the tool: the
answer passes through as the server sends it (JSON, or SSE with the progress
notifications before the result). ``notifications/cancelled`` goes to the session's
servers. A tool call is never retried nor failed over (it is not idempotent); the one
exception is an upstream session found gone (404), which never ran the call: the session
is initialised again and the call sent once more.

Not an ``OperationSpec``: the pipeline's stages read a model, a route and a provider
answer in the OpenAI shape, none of which a JSON-RPC message has. This module reuses the
pipeline's pieces instead of copying them: ``AccessControl.authenticate`` (keys),
``Limits.admit`` (a tool call is one request, and ``price_per_call_usd`` for budgets, under
the ``mcp:server.tool`` name the policies' ``model`` scope sees), ``Analytics.record``
(one event per message: the request log, the hub, ``/metrics``) and the tracing headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from .. import __version__
from ..errors import GatewayError
from ..guardrails.checks import Guardrails
from ..http import Request, Response, json_response
from ..observability import tracing
from ..observability.analytics import Analytics
from ..ports import Clock, UpstreamError
from ..ratelimits.enforcer import Admission, Limits
from ..request_event import RequestEvent
from ..routes import Route
from ..security.access import AccessControl, Principal
from ..security.permissions import allows
from ..security.privacy import client_address
from ..sse_buffer import EventBuffer, parse_event, split_events
from . import modern as era
from .catalog import MAX_PAGES, Catalog, gateway_name, split_name, unwrap_uri, wrap_uri
from .jsonrpc import (
    BLOCKED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RATE_LIMITED,
    UPSTREAM_UNAVAILABLE,
    Id,
    RpcError,
    check_message,
    encode,
    error_response,
    result,
)
from .pinning import Pins
from .sessions import GatewaySession, Sessions
from .settings import McpServerConfig, McpSettings
from .stream import SERVER_REQUEST as _SERVER_REQUEST
from .stream import merged, tagged
from .upstream import SessionGone, UpstreamClient, UpstreamSession, unavailable

log = logging.getLogger("flaregate.mcp")

PATH = "/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource"
# The revisions reachable by the initialize handshake, oldest to newest (mcp_types.version).
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION = HANDSHAKE_VERSIONS[-1]
_KNOWN_METHODS = frozenset({"initialize", "ping", "tools/list", "tools/call", "server/discover", "resources/list",
                            "resources/templates/list", "resources/read", "prompts/list", "prompts/get",
                            "completion/complete"})
_SERVER_CAPABILITIES = {"tools": {"listChanged": False}, "resources": {"listChanged": False, "subscribe": False},
                        "prompts": {"listChanged": False}, "completions": {}}
# The aggregated lists: method -> (the result's list, the field renamed or wrapped, how).
# A 2026-07-28 client has no session: its upstream sessions are this isolate's, per key and
# server, kept in the sessions' LRU under this name (no sealed id starts so).
_POOL = "sessionless:"
_LISTS = {"resources/list": ("resources", "uri", "uri"),
          "resources/templates/list": ("resourceTemplates", "uriTemplate", "template"),
          "prompts/list": ("prompts", "name", "name")}


_SERVER_INFO = {"name": "flaregate", "title": "Flaregate MCP gateway", "version": __version__}
_INSTRUCTIONS = "Tools of several MCP servers, each named server.tool."


def _text(value: Any, limit: int = 128) -> str:
    return value[:limit] if isinstance(value, str) else ""


class McpGateway:
    def __init__(self, settings: McpSettings, admin_key: str | None, clock: Clock, transport: Any,
                 access: AccessControl, limits: Limits, analytics: Analytics, pins: Pins,
                 require_admin: Callable[[Request], None], anonymize_ips: bool = True,
                 guardrails: Guardrails | None = None) -> None:
        self.settings = settings
        self._guardrails = guardrails
        self._anonymize = anonymize_ips
        self.pins = pins
        self._require_admin = require_admin
        self._clock = clock
        self._access = access
        self._limits = limits
        self._analytics = analytics
        secret = settings.session_secret.get_secret_value() if settings.session_secret else admin_key
        self.sessions = Sessions(secret.encode() if secret else None, settings.session_max_age_seconds)
        self.upstream = UpstreamClient(transport, settings.max_result_bytes)
        self.catalog = Catalog(settings.servers, clock, settings.list_cache_seconds, self._list_page, pins.observe)
        self._list_ids = 0
        self._listing: tuple[GatewaySession, dict[str, str]] | None = None

    def routes(self) -> list[Route]:
        return [
            Route(PATH, {"POST": self._post, "GET": self._get, "DELETE": self._delete}, "key",
                  "MCP (Streamable HTTP): the configured MCP servers' tools, namespaced server.tool"),
            Route(METADATA_PATH, {"GET": self._metadata}, "public",
                  "OAuth protected-resource metadata of /mcp (RFC 9728): gateway keys as Bearer tokens"),
            Route("/admin/mcp/tools", {"GET": self._pin_listing}, "admin",
                  "MCP tool pins: each tool's approved and last seen definition hash, held ones first"),
            Route("/admin/mcp/tools/{tool}/approve", {"POST": self._approve}, "admin",
                  "Approve an MCP tool's changed definition (body: {\"hash\": the seen hash})"),
        ]

    # -- admin: tool pins ----------------------------------------------------------------
    async def _pin_listing(self, request: Request, out: dict[str, str]) -> Response:
        self._require_admin(request)
        if self.pins.store is None:
            raise GatewayError(404, "Tool pins need the security store.", code="no_security_store")
        definitions: dict[str, Any] = {}
        for server, entry in self.catalog.cached().items():  # what this isolate last listed
            for tool, definition in {**entry.tools, **entry.held}.items():
                definitions[gateway_name(server, tool)] = definition
        pins = [{**pin, "held": pin["approved"] != pin["seen"], "definition": definitions.get(pin["tool"])}
                for pin in await self.pins.listing()]
        pins.sort(key=lambda pin: (not pin["held"], pin["tool"]))
        return json_response({"pinning": self.pins.pinning, "data": pins})

    async def _approve(self, request: Request, out: dict[str, str]) -> Response:
        self._require_admin(request)
        tool = request.params.get("tool", "")
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            body = None
        seen = body.get("hash") if isinstance(body, dict) else None
        if not isinstance(seen, str) or not seen:
            raise GatewayError(400, "Send {\"hash\": \"<the seen hash from GET /admin/mcp/tools>\"}.",
                               code="invalid_value", param="hash")
        if not await self.pins.approve(tool, seen[:128]):
            raise GatewayError(409, f"No tool {tool!r} whose last seen definition has that hash (it may have "
                               "changed again: list the pins anew).", code="pin_mismatch")
        parts = split_name(tool)
        if parts is not None:
            self.catalog.forget(parts[0])  # this isolate shows it at once; others within the list TTL
        return json_response({"tool": tool, "approved": seen})

    # -- HTTP entry points ---------------------------------------------------------------
    async def _post(self, request: Request, out: dict[str, str]) -> Response:
        event = self._new_event(request, out)
        began = self._clock.monotonic()
        id: Id = None
        response: Response | None = None
        modern = era.is_modern(request.headers.get("mcp-protocol-version"))
        try:
            principal = await self._authenticate(request)
            event["key_id"] = principal.key_id
            message = self._parse(request)
            id = message.get("id") if "method" in message else None
            method = message.get("method")
            event["mcp_method"] = method if method in _KNOWN_METHODS else (
                "notification" if isinstance(method, str) and "id" not in message else "other")
            self._check_version_header(request)
            if method == "server/discover":  # the 2026 probe: which revisions the gateway speaks
                response = self._discover(message, out)
            elif modern:
                response = await self._sessionless(message, principal, request, out, event, began)
            elif method == "initialize":
                response = await self._initialize(message, principal, out)
            else:
                session = self._session(request, principal)
                response = await self._dispatch(message, session, principal, request, out, event, began)
        except RpcError as exc:
            event["jsonrpc_error"] = exc.code
            if modern:
                exc.status = era.error_status(exc)
            response = error_response(exc, id, out)
        except GatewayError as exc:  # from a shared piece (limits): a JSON-RPC error all the same
            response = error_response(RpcError(INTERNAL_ERROR, exc.message, status=exc.status,
                                               headers=exc.headers), id, out)
        if not response.is_stream:
            self._finish(event, response.status, len(response.body) if isinstance(response.body, bytes) else 0,
                         began)
        return response

    async def _get(self, request: Request, out: dict[str, str]) -> Response:
        """The session's standalone stream: what its servers send on their own (see
        stream.py). 405 when none of them offers one (the spec's answer), as at 2026-07-28."""
        event = self._new_event(request, out)
        began = self._clock.monotonic()
        event["mcp_method"] = "stream"
        try:
            principal = await self._authenticate(request)
            event["key_id"] = principal.key_id
            if era.is_modern(request.headers.get("mcp-protocol-version")):
                raise RpcError(INVALID_REQUEST, "The 2026-07-28 revision has no GET stream.", status=405)
            self._check_version_header(request)
            if "text/event-stream" not in (request.headers.get("accept") or ""):
                raise RpcError(INVALID_REQUEST, "GET /mcp needs Accept: text/event-stream.", status=406)
            session = self._session(request, principal)
            streams = await self._open_streams(session, principal, self._trace(out))
            if not streams:
                raise RpcError(INVALID_REQUEST, "No MCP server of this session offers a stream.", status=405)
        except RpcError as exc:
            event["jsonrpc_error"] = exc.code
            response = error_response(exc, None, out)
            if exc.status == 405:
                response.headers["allow"] = "POST, DELETE"
            self._finish(event, response.status, len(response.body) if isinstance(response.body, bytes) else 0,
                         began)
            return response
        event["stream"], event["provider"] = True, "mcp"
        headers = {**out, "content-type": "text/event-stream", "cache-control": "no-cache"}
        return Response(200, headers, self._standalone(streams, event, began))

    async def _open_streams(self, session: GatewaySession, principal: Principal,
                            trace: Mapping[str, str]) -> dict[str, Any]:
        """Each reachable server's stream for its upstream session, opened concurrently."""
        servers = [(s, self.sessions.upstream(session, s.name)) for s in self._reachable(principal)]
        targets = [(s, up) for s, up in servers if up is not None]
        opened = await asyncio.gather(*(self.upstream.listen(s, up, trace, self.settings.stream_idle_seconds)
                                        for s, up in targets))
        return {s.name: response for (s, _), response in zip(targets, opened, strict=True) if response is not None}

    async def _standalone(self, streams: dict[str, Any], event: RequestEvent, began: float) -> AsyncIterator[bytes]:
        sent = [0]
        outcome = "complete"  # every server ended its stream
        try:
            async for region in merged(streams, self.settings.max_result_bytes, self.catalog.forget, sent):
                yield region
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "aborted"  # the client went away: the servers' streams are closed
            raise
        finally:
            event["stream_outcome"] = outcome
            event["mcp_server"] = ",".join(sorted(streams))[:128]
            self._finish(event, 200, sent[0], began)

    async def _delete(self, request: Request, out: dict[str, str]) -> Response:
        """End a session: its upstream sessions are terminated (the sealed id itself cannot
        be revoked; it ends with ``MCP_SESSION_MAX_AGE_SECONDS``)."""
        try:
            principal = await self._authenticate(request)
            session = self._session(request, principal)
        except RpcError as exc:
            return error_response(exc, None, out)
        trace = self._trace(out)
        servers = [(self.settings.server(name), up) for name, up in session.upstream.items()]
        await asyncio.gather(*(self.upstream.terminate(s, up, trace) for s, up in servers if s is not None))
        return Response(204, {})

    async def _metadata(self, request: Request, out: dict[str, str]) -> Response:
        base = _base_url(request)
        return json_response({"resource": base + PATH, "bearer_methods_supported": ["header"],
                              "resource_name": "Flaregate MCP gateway", "authorization_servers": [],
                              "resource_documentation": "Send a Flaregate gateway key: "
                              "'Authorization: Bearer <key>'."})

    # -- the steps -----------------------------------------------------------------------
    async def _authenticate(self, request: Request) -> Principal:
        try:
            return await self._access.authenticate(request)
        except GatewayError as exc:
            headers = dict(exc.headers)
            if exc.status == 401:
                headers["www-authenticate"] = (f'Bearer resource_metadata="{_base_url(request)}{METADATA_PATH}", '
                                               'error="invalid_token"')
            raise RpcError(INVALID_REQUEST, exc.message, status=exc.status, headers=headers) from None

    def _parse(self, request: Request) -> dict[str, Any]:
        if len(request.body) > self.settings.max_message_bytes:
            raise RpcError(INVALID_REQUEST, f"Message exceeds {self.settings.max_message_bytes} bytes "
                           "(MCP_MAX_MESSAGE_BYTES).", status=413)
        ctype = (request.headers.get("content-type") or "application/json").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise RpcError(INVALID_REQUEST, "Content-Type must be application/json.", status=415)
        try:
            message = json.loads(request.body)
        except (ValueError, RecursionError):
            raise RpcError(PARSE_ERROR, "Parse error: the body is not valid JSON.", status=400) from None
        return check_message(message)

    def _check_version_header(self, request: Request) -> None:
        version = request.headers.get("mcp-protocol-version")
        if version is not None and version not in HANDSHAKE_VERSIONS and not era.is_modern(version):
            raise era.unsupported(version, HANDSHAKE_VERSIONS)  # -32022 naming the revisions served

    # -- the 2026-07-28 revision: no session, an envelope per request ---------------------
    def _discover(self, message: dict[str, Any], out: dict[str, str]) -> Response:
        """``server/discover``: the revisions served; a client asking one the gateway does
        not speak gets -32022 naming them (the SDK's auto mode then takes the handshake)."""
        params = message.get("params") or {}
        meta = params.get("_meta")
        asked = (meta.get(era.PROTOCOL_VERSION_KEY) if isinstance(meta, dict) else None) or params.get("protocolVersion")
        if asked not in era.MODERN_VERSIONS:
            raise era.unsupported(asked, HANDSHAKE_VERSIONS)
        return result(message.get("id"), {
            "supportedVersions": [*HANDSHAKE_VERSIONS, *era.MODERN_VERSIONS], "capabilities": _SERVER_CAPABILITIES,
            "instructions": _INSTRUCTIONS, "cacheScope": "private", "ttlMs": 0, "resultType": "complete",
            "_meta": {era.SERVER_INFO_KEY: _SERVER_INFO}}, out)

    async def _sessionless(self, message: dict[str, Any], principal: Principal, request: Request,
                           out: dict[str, str], event: RequestEvent, began: float) -> Response:
        """One 2026-07-28 request: its envelope checked, then served as in a session whose
        upstream sessions are this isolate's for the key (the servers speak the handshake
        revisions: the envelope is taken off, each server initialised when first needed)."""
        if "method" not in message:
            raise RpcError(INVALID_REQUEST, "The 2026-07-28 revision has no server-to-client requests to answer.",
                           status=400)
        if "id" not in message:
            return Response(202, dict(out))  # no client notifications at this revision (cancel: close the stream)
        if message["method"] == "initialize":
            raise RpcError(INVALID_REQUEST, "The 2026-07-28 revision has no initialize: send each request with its "
                           "envelope, or initialize without MCP-Protocol-Version 2026-07-28.", status=400)
        version, _ = era.check_envelope(message, request.headers, HANDSHAKE_VERSIONS)
        # No back channel: the servers are told of no client capability (they ask nothing).
        session = GatewaySession(principal.key_id, version, self._clock.now(), token=_POOL + principal.key_id)
        return await self._dispatch(era.without_envelope(message), session, principal, request, out, event, began)

    def _session(self, request: Request, principal: Principal) -> GatewaySession:
        token = request.headers.get("mcp-session-id")
        if not token:
            raise RpcError(INVALID_REQUEST, "Missing Mcp-Session-Id: send initialize first.", status=400)
        session = self.sessions.open(token, principal.key_id, self._clock.now())
        if session is None:  # forged, another key's, or too old: the client starts again
            raise RpcError(INVALID_REQUEST, "Unknown or expired session: send initialize again.", status=404)
        return session

    def _reachable(self, principal: Principal) -> list[McpServerConfig]:
        # The key's servers within its team's (Principal narrows by both).
        return [s for s in self.settings.servers if principal.allows_mcp_server(s.name)]

    async def _initialize(self, message: dict[str, Any], principal: Principal, out: dict[str, str]) -> Response:
        params = message.get("params") or {}
        asked = params.get("protocolVersion")
        if not isinstance(asked, str):
            raise RpcError(INVALID_PARAMS, "initialize needs params.protocolVersion (a string).")
        version = asked if asked in HANDSHAKE_VERSIONS else LATEST_VERSION
        session = GatewaySession(principal.key_id, version, self._clock.now(), capabilities=_relayed(params))
        trace = self._trace(out)
        servers = self._reachable(principal)
        opened = await asyncio.gather(*(self._open_upstream(s, trace, session.capabilities) for s in servers))
        for server, upstream in zip(servers, opened, strict=True):
            if upstream is not None:  # a server down now is initialised when it is first needed
                session.upstream[server.name] = upstream
        token = self.sessions.seal(session)
        return result(message.get("id"), {
            "protocolVersion": version, "capabilities": _SERVER_CAPABILITIES,
            "serverInfo": _SERVER_INFO, "instructions": _INSTRUCTIONS},
            {**out, "mcp-session-id": token})

    async def _open_upstream(self, server: McpServerConfig, trace: Mapping[str, str],
                             capabilities: Mapping[str, Any]) -> UpstreamSession | None:
        try:
            return await self.upstream.initialize(server, trace, capabilities)
        except RpcError as exc:
            log.warning("MCP server %s: %s", server.name, exc.message)
            return None

    async def _upstream_session(self, session: GatewaySession, server: McpServerConfig,
                                trace: Mapping[str, str], renew: bool = False) -> UpstreamSession:
        found = None if renew else self.sessions.upstream(session, server.name)
        if found is None:
            found = await self.upstream.initialize(server, trace, session.capabilities)
            self.sessions.replace(session, server.name, found)
        else:  # one the isolate kept (a sessionless client's, a renewed one): this request's too
            session.upstream.setdefault(server.name, found)
        return found

    async def _dispatch(self, message: dict[str, Any], session: GatewaySession, principal: Principal,
                        request: Request, out: dict[str, str], event: RequestEvent, began: float) -> Response:
        method = message.get("method")
        id = message.get("id")
        if method is None:  # the client's answer to a server's request (sampling, elicitation)
            await self._answer_server(message, session, out)
            return Response(202, dict(out))
        if "id" not in message:
            if method == "notifications/cancelled":
                await self._cancel(message, session, out)
            return Response(202, dict(out))
        if method == "ping":
            return self._result(session, method, id, {}, out)
        if method == "tools/list":
            return self._result(session, method, id, await self._tools(session, principal, out), out)
        if method == "tools/call":
            return await self._call(message, session, principal, request, out, event, began)
        if method in _LISTS:
            return self._result(session, method, id, await self._aggregate(method, session, principal, out), out)
        if method in ("resources/read", "prompts/get", "completion/complete"):
            return self._result(session, method, id, await self._forward(message, session, principal, out, event),
                                out)
        raise RpcError(METHOD_NOT_FOUND, f"Method not found: {str(method)[:64]}")

    def _result(self, session: GatewaySession, method: str, id: Id, value: Mapping[str, Any],
                out: dict[str, str]) -> Response:
        if era.is_modern(session.protocol_version):
            value = era.shaped(method, value, self.settings.list_cache_seconds)
        return result(id, value, out)

    # -- resources, prompts, completion --------------------------------------------------
    async def _upstream_request(self, server: McpServerConfig, session: GatewaySession, method: str,
                                params: Mapping[str, Any], id: Id, trace: Mapping[str, str]) -> dict[str, Any]:
        """One request answered whole, the upstream session initialised again if gone."""
        upstream = await self._upstream_session(session, server, trace)
        try:
            return await self.upstream.request(server, method, params, id, upstream, trace)
        except SessionGone:
            upstream = await self._upstream_session(session, server, trace, renew=True)
            return await self.upstream.request(server, method, params, id, upstream, trace)

    def _exposes(self, server: McpServerConfig, kind: str, name: str) -> bool:
        patterns = server.prompts if kind == "name" else server.resources
        return allows(list(patterns) if patterns is not None else None, name)

    async def _aggregate(self, method: str, session: GatewaySession, principal: Principal,
                         out: dict[str, str]) -> dict[str, Any]:
        """A list from every reachable server, live (resources and prompts may change per
        session), names and URIs wrapped; a server down is left out."""
        key, field, kind = _LISTS[method]
        trace = self._trace(out)

        async def one(server: McpServerConfig) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            cursor: str | None = None
            try:
                for _ in range(MAX_PAGES):
                    page = await self._upstream_request(server, session, method, {"cursor": cursor} if cursor else {},
                                                        f"flaregate-{key}-{self._next_id()}", trace)
                    for item in page.get(key) or ():
                        value = item.get(field) if isinstance(item, dict) else None
                        if isinstance(value, str) and value and self._exposes(server, kind, value):
                            wrapped = (gateway_name(server.name, value) if kind == "name"
                                       else wrap_uri(server.name, value, kind == "template"))
                            items.append({**item, field: wrapped})
                    cursor = page.get("nextCursor")
                    if not isinstance(cursor, str) or not cursor:
                        break
            except (RpcError, SessionGone) as exc:
                log.info("MCP server %s left out of %s: %s", server.name, method, exc)
            return items

        found = await asyncio.gather(*(one(s) for s in self._reachable(principal)))
        return {key: [item for items in found for item in items]}

    async def _forward(self, message: dict[str, Any], session: GatewaySession, principal: Principal,
                       out: dict[str, str], event: RequestEvent) -> dict[str, Any]:
        """``resources/read``, ``prompts/get``, ``completion/complete``: to the server the
        name or URI names, unwrapped; the answer's URIs wrapped again."""
        method, params = message["method"], dict(message.get("params") or {})
        if method == "completion/complete":
            ref = params.get("ref")
            if not isinstance(ref, dict) or not isinstance(params.get("argument"), dict):
                raise RpcError(INVALID_PARAMS, "completion/complete needs params.ref and params.argument (objects).")
            if ref.get("type") == "ref/prompt":
                server, name = self._target(principal, "name", ref.get("name"))
                params["ref"] = {**ref, "name": name}
            else:
                server, uri = self._target(principal, "template", ref.get("uri"))
                params["ref"] = {**ref, "uri": uri}
        elif method == "prompts/get":
            server, params["name"] = self._target(principal, "name", params.get("name"))
        else:
            server, params["uri"] = self._target(principal, "uri", params.get("uri"))
        event["mcp_server"], event["provider"] = server.name, f"mcp:{server.name}"
        answer = await self._upstream_request(server, session, method, params, message.get("id"), self._trace(out))
        for content in answer.get("contents") or ():  # resources/read
            if isinstance(content, dict) and isinstance(content.get("uri"), str):
                content["uri"] = wrap_uri(server.name, content["uri"])
        return answer

    def _target(self, principal: Principal, kind: str, value: Any) -> tuple[McpServerConfig, str]:
        """The server a prompt name or wrapped URI names, and the name or URI it knows."""
        what = "prompt name" if kind == "name" else "resource URI"
        if not isinstance(value, str) or not value:
            raise RpcError(INVALID_PARAMS, f"Missing {what}.")
        parts = split_name(value) if kind == "name" else unwrap_uri(value)
        server = self.settings.server(parts[0]) if parts is not None else None
        if parts is None or server is None or not self._exposes(server, kind, parts[1]):
            raise RpcError(INVALID_PARAMS, f"Unknown {what}: {value[:160]}.")
        if server not in self._reachable(principal):
            raise RpcError(INVALID_PARAMS, f"MCP server '{server.name}' is not allowed for this key.", status=403)
        return server, parts[1]

    def _next_id(self) -> int:
        self._list_ids += 1
        return self._list_ids

    # -- tools ---------------------------------------------------------------------------
    async def _list_page(self, server: McpServerConfig, cursor: str | None) -> dict[str, Any]:
        assert self._listing is not None
        session, trace = self._listing
        self._list_ids += 1
        params = {"cursor": cursor} if cursor else {}
        id = f"flaregate-list-{self._list_ids}"
        upstream = await self._upstream_session(session, server, trace)
        try:
            return await self.upstream.request(server, "tools/list", params, id, upstream, trace)
        except SessionGone:
            upstream = await self._upstream_session(session, server, trace, renew=True)
            return await self.upstream.request(server, "tools/list", params, id, upstream, trace)

    async def _server_tools(self, server: McpServerConfig, session: GatewaySession,
                            trace: Mapping[str, str]) -> Any:
        self._listing = (session, dict(trace))  # whose upstream session a cache miss lists with
        try:
            return await self.catalog.tools(server, session.token)
        finally:
            self._listing = None

    async def _tools(self, session: GatewaySession, principal: Principal, out: dict[str, str]) -> dict[str, Any]:
        trace = self._trace(out)
        servers = self._reachable(principal)
        # One after another: the fetcher is told whose session lists (a miss per server at
        # most per MCP_LIST_CACHE_SECONDS, so the usual list is all cache hits).
        tools: list[dict[str, Any]] = []
        for server in servers:
            listed = await self._server_tools(server, session, trace)
            for name, tool in listed.tools.items():
                if principal.allows_mcp_tool(server.name, name):
                    tools.append({**tool, "name": gateway_name(server.name, name)})
        return {"tools": tools}

    async def _call(self, message: dict[str, Any], session: GatewaySession, principal: Principal,
                    request: Request, out: dict[str, str], event: RequestEvent, began: float) -> Response:
        id = message.get("id")
        params = message.get("params") or {}
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise RpcError(INVALID_PARAMS, "tools/call needs params.name (a tool name).")
        if "arguments" in params and not isinstance(params["arguments"], dict):
            raise RpcError(INVALID_PARAMS, "tools/call params.arguments must be an object.")
        parts = split_name(name)
        server = self.settings.server(parts[0]) if parts is not None else None
        if parts is None or server is None:
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name[:160]} (tools are named server.tool).")
        tool = parts[1]
        if not self.catalog.exposed(server, tool):
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name[:160]}.")
        if not principal.allows_mcp_tool(server.name, tool):
            event["mcp_server"], event["mcp_tool"] = server.name, tool[:128]
            raise RpcError(INVALID_PARAMS, f"Tool {name[:160]} is not allowed for this key.", status=403)
        trace = self._trace(out)
        listed = await self._server_tools(server, session, trace)
        if listed.error is not None:
            event["mcp_server"], event["provider"] = server.name, f"mcp:{server.name}"
            raise RpcError(UPSTREAM_UNAVAILABLE, listed.error)
        if tool not in listed.tools:
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name[:160]}.")
        # Known now: the names become labels (bounded by the servers' own lists).
        event["mcp_server"], event["mcp_tool"] = server.name, tool
        event["provider"], event["model"] = f"mcp:{server.name}", name
        admission = await self._admit(request, principal, server, tool, out, event)
        guard = self._guard_arguments(params, name, principal, event)
        if guard is not None:
            params = {**params, "arguments": guard[1]}
        policy = guard[0] if guard is not None else None
        forwarded = {**message, "params": {**params, "name": tool}}
        started = self._clock.monotonic()
        try:
            exchange = await self._send_call(server, session, forwarded, trace)
        except RpcError:
            await admission.refund()  # the server never took it: its price is given back
            event.pop("cost_usd", None)
            raise
        event["upstream_status"] = 200
        accept = request.headers.get("accept") or ""
        headers = {**out, "content-type": "application/json"}
        modern = era.is_modern(session.protocol_version)
        if exchange.streamed and "text/event-stream" in accept:
            headers.update({"content-type": "text/event-stream", "cache-control": "no-cache"})
            # At 2026-07-28 closing the stream is the client's cancel: the server is told so.
            aborted = (lambda: self._cancel(_cancelled(id), session, out)) if modern else None
            return Response(200, headers, self._relay(exchange, id, event, admission, started, began, policy,
                                                      server.name, modern, aborted))
        try:
            if exchange.streamed:  # the client takes JSON only: the response, without the notifications
                body = encode(await exchange.answer(id))
            else:
                body = await exchange.response.read()
                await exchange.response.aclose()
        except UpstreamError as exc:
            raise unavailable(server.name, f"the answer broke off ({exc})") from None
        finally:
            event["upstream_ms"] = round((self._clock.monotonic() - started) * 1000, 3)
            admission.keep()  # the units are the call itself: what was reserved is what it cost
        if policy is not None:
            body = self._guard_result(policy, body, id, event)
        if modern:
            body = _with_result_type(body)
        _note_error(event, body)
        return Response(200, headers, body)

    async def _admit(self, request: Request, principal: Principal, server: McpServerConfig, tool: str,
                     out: dict[str, str], event: RequestEvent) -> Admission:
        """The call counted by the rate limits and budgets (per key, server, tool: the
        policies say which) at its price; a refusal is HTTP 429 (503 for a limiter away that
        fails closed) with the JSON-RPC error -32029 and data saying why and when to retry."""
        name = gateway_name(server.name, tool)
        price = server.price_of(tool)
        try:
            admission = await self._limits.admit(request, principal, f"mcp:{name}", {}, out, event,
                                                 call_price=price, tool=name)
        except GatewayError as exc:
            if exc.status not in (429, 503):
                raise
            data: dict[str, Any] = {"reason": exc.code or "rate_limit_exceeded"}
            if exc.headers.get("retry-after", "").isdigit():
                data["retryAfterSeconds"] = int(exc.headers["retry-after"])
            raise RpcError(RATE_LIMITED, exc.message, status=exc.status, headers=exc.headers, data=data) from None
        if price > 0:
            event["cost_usd"] = price
        return admission

    # -- guardrails ----------------------------------------------------------------------
    def _guard_arguments(self, params: dict[str, Any], name: str, principal: Principal,
                         event: RequestEvent) -> tuple[Any, Any] | None:
        """The guardrail policy of this call (the key's, or the route ``mcp:server.tool``'s,
        or the default) applied to its arguments: PII redacted in place or blocked, deny
        lists blocked. Returns (the policy, the arguments to send), None without a policy."""
        if self._guardrails is None:
            return None
        policy = self._guardrails.policy_for(f"mcp:{name}", principal.key_id, principal.name)
        if policy is None:
            return None
        body = {"messages": params.get("arguments") or {}}
        try:
            self._guardrails.check_input(policy, body, event)
        except GatewayError as exc:
            raise RpcError(BLOCKED, exc.message, status=400) from None
        return policy, body["messages"]

    def _guard_result(self, policy: Any, payload: bytes, id: Id, event: RequestEvent) -> bytes:
        """A tools/call response with its text contents checked (redacted, or the call
        answered with a JSON-RPC error when the policy blocks)."""
        assert self._guardrails is not None
        try:
            message = json.loads(payload)
        except ValueError:
            return payload
        answer = message.get("result") if isinstance(message, dict) else None
        if not isinstance(answer, dict):
            return payload
        try:
            for content in answer.get("content") or ():
                if isinstance(content, dict) and isinstance(content.get("text"), str):
                    content["text"] = self._guardrails.check_output_text(policy, content["text"], event)
            if "structuredContent" in answer:
                checked = {"messages": answer["structuredContent"]}
                found = json.dumps(checked)
                redacted = self._guardrails.check_output_text(policy, found, event)
                if redacted != found:
                    try:
                        answer["structuredContent"] = json.loads(redacted)["messages"]
                    except ValueError:  # a redaction that broke the JSON: the text content stands alone
                        del answer["structuredContent"]
        except GatewayError as exc:
            event["jsonrpc_error"] = BLOCKED
            return encode(RpcError(BLOCKED, exc.message).payload(id))
        return encode(message)

    async def _send_call(self, server: McpServerConfig, session: GatewaySession, message: dict[str, Any],
                         trace: Mapping[str, str]) -> Any:
        upstream = await self._upstream_session(session, server, trace)
        try:
            exchange = await self.upstream.post(server, message, upstream, trace)
        except SessionGone:  # the server never ran it: a new session, the call once more
            upstream = await self._upstream_session(session, server, trace, renew=True)
            exchange = await self.upstream.post(server, message, upstream, trace)
        if exchange is None:
            raise unavailable(server.name, "it accepted the call without answering it")
        return exchange

    async def _relay(self, exchange: Any, id: Id, event: RequestEvent, admission: Admission,
                     started: float, began: float, policy: Any, server: str, modern: bool = False,
                     aborted: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[bytes]:
        """The server's SSE answer passed on event by event as it comes (progress and the
        server's own requests first, then the result); ends once the response has gone by.
        A server's request (sampling, elicitation) gets an id naming the server, so the
        client's answer finds its way back; with a guardrail policy the response is checked."""
        buffer = EventBuffer(self.settings.max_result_bytes)
        sent = 0
        outcome = "truncated"
        try:
            async for chunk in exchange.response.aiter_bytes():
                region = buffer.feed(chunk)
                if not region:
                    continue
                if policy is not None or modern or b'"method"' in region:
                    region = self._rewrite_events(policy, region, id, event, server, modern)
                sent += len(region)
                yield region
                if _response_in(region, id, event):
                    outcome = "complete"
                    break
        except UpstreamError as exc:
            outcome = "interrupted"
            yield b"event: message\ndata: " + encode(unavailable(exchange.server.name, f"the answer broke off ({exc})")
                                                     .payload(id)) + b"\n\n"
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "aborted"  # the client went away (or cancelled)
            raise
        finally:
            await exchange.response.aclose()
            if outcome == "aborted" and aborted is not None:
                try:
                    await asyncio.wait_for(aborted(), 2.0)
                except Exception:  # best effort: the client has gone already
                    log.info("could not tell the MCP server %s of a closed stream", server)
            admission.keep()
            event["stream"], event["stream_outcome"] = True, outcome
            event["upstream_ms"] = round((self._clock.monotonic() - started) * 1000, 3)
            if outcome == "truncated":
                event["error"] = "upstream_stream_truncated"
            self._finish(event, 200, sent, began)

    def _rewrite_events(self, policy: Any, region: bytes, id: Id, event: RequestEvent, server: str,
                        modern: bool = False) -> bytes:
        out = []
        for raw in split_events(region):
            name, data = parse_event(raw)
            message = _json_object(data) if data and name in (None, "message") else None
            if message is None:
                out.append(raw + b"\n\n")
            elif (policy is not None or modern) and message.get("id") == id and ("result" in message
                                                                                 or "error" in message):
                body = self._guard_result(policy, data.encode(), id, event) if policy is not None else data.encode()
                out.append(b"event: message\ndata: " + (_with_result_type(body) if modern else body) + b"\n\n")
            elif "method" in message and "id" in message:  # the server asks the client
                out.append(b"event: message\ndata: " + encode(tagged(server, message)) + b"\n\n")
            else:
                out.append(raw + b"\n\n")
        return b"".join(out)

    async def _answer_server(self, message: dict[str, Any], session: GatewaySession, out: dict[str, str]) -> None:
        """A client's answer to a server's request, sent to that server with its own id."""
        tagged = message.get("id")
        if not isinstance(tagged, str) or not tagged.startswith(_SERVER_REQUEST):
            return  # not an id the gateway handed out: nobody to tell
        name, _, original = tagged[len(_SERVER_REQUEST):].partition(":")
        server = self.settings.server(name)
        upstream = self.sessions.upstream(session, name) if server is not None else None
        try:
            original_id = json.loads(original)
        except ValueError:
            return
        if server is None or upstream is None or not (isinstance(original_id, str | int)):
            return
        try:
            exchange = await self.upstream.post(server, {**message, "id": original_id}, upstream, self._trace(out))
            if exchange is not None:
                await exchange.response.aclose()
        except (RpcError, SessionGone) as exc:
            log.info("MCP server %s did not take the client's answer: %s", name, exc)

    async def _cancel(self, message: dict[str, Any], session: GatewaySession, out: dict[str, str]) -> None:
        """A cancellation goes to each server of the session: ids are the client's, passed
        through unchanged, so the one that runs the request stops it and the others ignore it."""
        trace = self._trace(out)

        async def send(server: McpServerConfig, upstream: UpstreamSession) -> None:
            try:
                exchange = await self.upstream.post(server, message, upstream, trace)
                if exchange is not None:
                    await exchange.response.aclose()
            except (RpcError, SessionGone):
                pass

        targets = [(self.settings.server(name), up) for name, up in session.upstream.items()]
        await asyncio.gather(*(send(s, up) for s, up in targets if s is not None))

    # -- records -------------------------------------------------------------------------
    def _trace(self, out: Mapping[str, str]) -> dict[str, str]:
        return {"traceparent": out["traceparent"], "x-request-id": out["x-request-id"]}

    def _new_event(self, request: Request, out: dict[str, str]) -> RequestEvent:
        return {"ts": self._clock.now(), "request_id": out["x-request-id"],
                "trace_id": tracing.trace_id(out["traceparent"]), "span_id": tracing.span_id(out["traceparent"]),
                "parent_span_id": tracing.span_id(request.headers.get("traceparent")), "path": PATH, "status": 0,
                "model": None, "provider": None, "cache": None, "stream": False, "request_bytes": len(request.body),
                "client": client_address(request.client_ip, self._anonymize)}

    def _finish(self, event: RequestEvent, status: int, response_bytes: int, began: float) -> None:
        event["status"] = status
        event["response_bytes"] = response_bytes
        event["latency_ms"] = round((self._clock.monotonic() - began) * 1000, 3)
        if "jsonrpc_error" in event and status < 400:
            event["error"] = f"jsonrpc_{event['jsonrpc_error']}"
        self._analytics.record(event)


def _note_error(event: RequestEvent, body: bytes) -> None:
    """The JSON-RPC error code of an answer read whole, for the record."""
    try:
        message = json.loads(body)
    except ValueError:
        event["error"] = "upstream_malformed_response"
        return
    error = message.get("error") if isinstance(message, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        event["jsonrpc_error"] = error["code"]
    elif isinstance(message, dict) and isinstance(message.get("result"), dict) and message["result"].get("isError"):
        event["error_code"] = "tool_error"


def _with_result_type(payload: bytes) -> bytes:
    """A server's (handshake-era) answer as a 2026-07-28 client reads it: with ``resultType``."""
    message = _json_object(payload.decode("utf-8", "replace"))
    if message is None or not isinstance(message.get("result"), dict) or "resultType" in message["result"]:
        return payload
    return encode({**message, "result": {**message["result"], "resultType": "complete"}})


def _cancelled(id: Id) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": id, "reason": "the client closed the stream"}}


def _json_object(data: str) -> dict[str, Any] | None:
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _relayed(params: Mapping[str, Any]) -> dict[str, Any]:
    """The client capabilities a server may use through the gateway (what the client
    answers: sampling, elicitation, roots), bounded; the rest is the gateway's business."""
    capabilities = params.get("capabilities")
    if not isinstance(capabilities, dict):
        return {}
    kept = {k: v for k, v in capabilities.items() if k in ("sampling", "elicitation", "roots") and isinstance(v, dict)}
    return kept if len(json.dumps(kept)) <= 1024 else {}


def _response_in(region: bytes, id: Id, event: RequestEvent) -> bool:
    for raw in split_events(region):
        name, data = parse_event(raw)
        if not data or name not in (None, "message"):
            continue
        try:
            message = json.loads(data)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("id") == id and ("result" in message or "error" in message):
            _note_error(event, data.encode())
            return True
    return False


def _base_url(request: Request) -> str:
    host = (request.headers.get("host") or "localhost")[:256]
    local = host.split(":")[0] in ("localhost", "127.0.0.1", "[::1]")
    scheme = request.headers.get("x-forwarded-proto") or ("http" if local else "https")
    return f"{scheme}://{host}"
