"""The gateway core: one request in, one response out.

Hosts call :meth:`Gateway.handle`. Every path the gateway answers is in one route table
(:attr:`Gateway.routes`, built from each package's declared routes and the gateway's own);
every API operation runs through the one pipeline (``pipeline/``) as a spec of its own
(``operations/``). ``/ws`` is the host's (it needs an upgrade) but authorisation goes
through :meth:`Gateway.authorize_admin`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from . import __version__
from .accounting import PriceTable
from .batches.deferred import DeferredBatches
from .batches.paths import FILES_PATH
from .cache.admin import CacheAdmin
from .cache.layer import CacheLayer
from .cache.predictive import PredictiveWarmer
from .cache.warming import CacheWarming
from .config import Settings
from .console.endpoints import Observability
from .console.team_spend import TeamSpend
from .errors import GatewayError
from .guardrails import Guardrails
from .http import Headers, Request, Response, json_response
from .metadata.tags import MAX_TAGS, METADATA_HEADER
from .observability import tracing
from .observability.alerts import Alerts
from .observability.analytics import Analytics
from .observability.operational_events import OperationalEvents
from .operations import chat, embeddings, images, messages, moderations, speech, transcriptions
from .operations.responses import responses_spec
from .overload.gate import ShedGate
from .pipeline.runner import Pipeline
from .pipeline.spec import OperationSpec
from .ports import Ports
from .providers.build import build_providers
from .ratelimits.admin import RateLimitAdmin
from .ratelimits.enforcer import Limits
from .ratelimits.thresholds import BudgetThresholds
from .realtime.entry import RealtimeEntry
from .responses.conversations import Conversations
from .routes import Route, RouteTable
from .routing.routes import Router
from .routing.upstream_call import UpstreamCaller
from .security.access import AccessControl, Principal
from .security.admin import require_admin
from .security.admin_api import AdminApi
from .security.audit import AdminAudit
from .security.gate import SecurityGate
from .security.keys import KeyRing
from .security.provider_view import provider_view
from .security.webhooks import WebhookDispatcher

if TYPE_CHECKING:
    from .batches.api import Batches
    from .cache.semantic.layer import SemanticCache
    from .mcp_gateway.endpoint import McpGateway

log = logging.getLogger("flaregate")

CHAT_PATH = chat.PATH
WS_PATH = "/ws"


class Gateway:
    def __init__(self, settings: Settings, ports: Ports, keys: KeyRing | None = None) -> None:
        self.settings = settings
        self.ports = ports
        self.keys = keys if keys is not None else KeyRing(k.get_secret_value() for k in settings.api_keys)
        self.router = Router(settings, build_providers(settings, ports.upstream, ports.ai))
        self.caching = CacheLayer(settings, ports)
        self.shedding = ShedGate(settings.shedding)
        self.analytics = Analytics(ports.metrics_hub, ports.tasks, batch_size=settings.analytics_batch_size,
                                   batch_delay_ms=settings.analytics_batch_delay_ms,
                                   prices=PriceTable(settings.routes))
        self.observability = Observability(settings, ports.metrics_hub, ports.clock, self.analytics.changes,
                                           ports.security)
        # Keys, signing, limits, CORS, webhooks: see access.py, gate.py, webhooks.py.
        security = settings.security
        self.access = AccessControl(self.keys, ports.security, ports.clock, security.key_cache_seconds,
                                    tasks=ports.tasks)
        self.gate = SecurityGate(settings, ports.clock, ports.security)
        self.webhooks = WebhookDispatcher(security, ports.security, ports.upstream, ports.tasks, ports.clock)
        self.alerts = Alerts(self.webhooks, ports.clock)
        events = OperationalEvents(self.analytics, self.alerts, self.webhooks)
        self.upstream = UpstreamCaller(settings, ports.clock, events.emit, on_attempt=self.alerts.upstream_result)
        self.caching.semantic = self._semantic_cache() if settings.cache.route_semantic else None
        self.admin_api = AdminApi(settings, ports.security, self.access, self.webhooks, ports.clock)
        self.audit = AdminAudit(settings, ports.security, ports.tasks, settings.request_logs.error_seconds)
        thresholds = BudgetThresholds(settings.budget_alerts.alert_at, ports.security, ports.tasks, self.webhooks,
                                      self.analytics, ports.clock)
        self.ratelimits = Limits(settings, ports.rate_limiter, ports.clock, self.analytics, self.alerts, thresholds)
        guardrails = Guardrails(settings.guardrails) if settings.guardrails.policies else None
        self.pipeline = Pipeline(
            settings, ports.clock, self.access, self.router, self.upstream, self.ratelimits, self.analytics,
            self.alerts, self.caching, self.shedding, guardrails,
            [p.api_key.get_secret_value() for p in settings.providers if p.api_key], ports.tasks)
        self.operations: tuple[OperationSpec, ...] = (
            chat.SPEC, embeddings.SPEC, messages.SPEC, responses_spec(Conversations(ports.cache), ports.tasks),
            moderations.SPEC, images.SPEC, speech.SPEC, transcriptions.SPEC)
        # /v1/realtime: admitted here, upgraded and relayed by the hosts (realtime/); its
        # modules load on its first use.
        self.realtime = RealtimeEntry(settings, ports.clock, self.pipeline, ports.security)
        self.predictive = PredictiveWarmer(settings, ports, self._chat)
        self.pipeline.predictive = self.predictive
        self.cache_warming = CacheWarming(settings, ports, self.access, self._chat)
        cache_admin = CacheAdmin(self.caching, lambda: {"predictive": self.predictive.stats()})
        # The Files and Batches APIs, where the host offers a blob store and a job store:
        # declared now, built on their first request (batches/deferred.py).
        self.batches = DeferredBatches(self._batches) if ports.jobs is not None and ports.blobs is not None else None
        self._by_path = {spec.path: spec for spec in self.operations}
        self.mcp = self._mcp_gateway() if settings.mcp.servers else None
        self.routes = RouteTable([
            *self._own_routes(), *self.observability.routes(), *self.admin_api.routes(),
            *RateLimitAdmin(settings, self.ratelimits, ports.security).routes(), *cache_admin.routes(),
            *TeamSpend(settings, ports.metrics_hub, ports.security).routes(),
            *self.cache_warming.routes(), *(self.batches.routes() if self.batches is not None else ()),
            *(self.mcp.routes() if self.mcp is not None else ()), *self.realtime.routes(),
            *(self._semantic_feedback(events.emit) if self.caching.semantic is not None else ())])

    def _semantic_cache(self) -> SemanticCache | None:
        """The semantic cache, imported only when a route turns it on: a Worker without one
        loads none of its modules (nor its guard's tables)."""
        from .cache.semantic.setup import build_semantic_cache

        return build_semantic_cache(self.settings, self.ports, self.router, self.upstream)

    def _semantic_feedback(self, emit: Callable[[dict[str, Any]], None]) -> list[Route]:
        from .cache.semantic.admin import SemanticFeedback

        return SemanticFeedback(self.caching, emit).routes()

    def _batches(self) -> Batches:
        from .batches.api import Batches
        ports = self.ports
        assert ports.jobs is not None and ports.blobs is not None
        return Batches(self.settings.batches, self.access, ports.jobs, ports.blobs, ports.clock, self.batch_line,
                       self.settings.security.max_json_depth)

    def _mcp_gateway(self) -> McpGateway:
        """The MCP gateway (``/mcp``), imported only when MCP servers are configured: a
        Worker without them loads none of its modules."""
        from .mcp_gateway.endpoint import McpGateway
        from .mcp_gateway.pinning import Pins

        settings, ports = self.settings, self.ports
        admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
        pins = Pins(ports.security, settings.mcp.pinning, self.analytics, self.webhooks, ports.clock)
        return McpGateway(settings.mcp, admin_key, ports.clock, ports.upstream, self.access, self.ratelimits,
                          self.analytics, pins, partial(require_admin, settings=settings),
                          settings.security.anonymize_ips, self.pipeline.guardrails)

    def _own_routes(self) -> list[Route]:
        api = [Route(spec.path, {"POST": partial(self._operation, spec)}, "key", spec.summary, api=True,
                     body=spec.body_model, example=spec.example, media_type=spec.media_type, upstream=True)
               for spec in self.operations]
        return [
            *api,
            Route("/v1/models", {"GET": self._models}, "key", "The routed model aliases this key may use", api=True),
            Route("/v1/providers", {"GET": self._providers}, "key", "Health of the route targets this key may use (error texts: admin key)"),
            Route("/health", {"GET": self._health}, "public", "Liveness and the health score"),
            Route("/openapi.json", {"GET": self._openapi}, "public", "OpenAPI 3.1 of the OpenAI-compatible API"),
            # Upgraded by the hosts before the table is consulted; a plain GET gets the 426.
            Route(WS_PATH, {"GET": self._ws_without_upgrade}, "observer", "Live metrics (WebSocket)"),
        ]

    # -- entry points --------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        rid = tracing.request_id(request.headers.get("x-request-id"))
        out_headers = {"x-request-id": rid, "traceparent": tracing.child_traceparent(request.headers.get("traceparent"))}
        route = None
        try:
            response = await self.gate.screen(request)
            if response is None:
                route, handler, params = self.routes.match(request.method, request.path)
                if params:
                    request.params = params
                response = await handler(request, out_headers)
        except GatewayError as exc:
            response = exc.to_response()
        except Exception:
            log.exception("unhandled error in request %s", rid)
            response = GatewayError(500, "Internal gateway error.", type="api_error", code="internal_error").to_response()
        if route is not None and route.access == "admin":
            self.audit.record(request, response.status)  # changes only (security/audit.py)
        for name, value in out_headers.items():
            response.headers.setdefault(name, value)
        self.gate.finish(request, response)
        return response

    def streams_body(self, method: str, path: str) -> bool:
        """Whether the host hands this request's body over as a stream (``Request.stream``),
        unread and uncapped by ``MAX_BODY_BYTES``: a file upload, capped by its own limit."""
        return method == "POST" and path == FILES_PATH and self.batches is not None

    async def authorize(self, request: Request) -> str:
        """Check the gateway key of a non-API request; raise GatewayError."""
        return (await self.access.authenticate(request)).key_id

    def authorize_admin(self, request: Request) -> str | None:
        """Check the admin key of ``/ws`` (header, ``?token=`` or subprotocol); raise
        GatewayError. Returns the subprotocol the WebSocket handshake must select.
        Synchronous on purpose: nothing to await, so no call site can forget to."""
        return self.observability.authorize(request)

    # -- operations ----------------------------------------------------------------------
    async def _operation(self, spec: OperationSpec, request: Request, out: dict[str, str]) -> Response:
        return await self.pipeline.run(spec, request, out)

    async def _chat(self, request: Request, out: dict[str, str], principal: Principal | None = None) -> Response:
        """A chat completion; ``principal`` set: on that key's behalf (cache warming)."""
        return await self.pipeline.run(chat.SPEC, request, out, acting=principal)

    async def batch_line(self, path: str, body: bytes, principal: Principal,
                          batch_id: str) -> tuple[Response, dict[str, str]]:
        """One batch line as a request of the batch's key, through the same pipeline as the
        HTTP route: low priority under load shedding, tagged with its batch in the request log."""
        pairs = [("content-type", "application/json"), ("x-flaregate-priority", "low")]
        if len(principal.policy.tags or {}) < MAX_TAGS:  # a key already at the most tags keeps its own
            pairs.append((METADATA_HEADER, json.dumps({"batch_id": batch_id})))
        headers = Headers(pairs)
        out = {"x-request-id": tracing.request_id(None), "traceparent": tracing.child_traceparent(None)}
        response = await self.pipeline.run(self._by_path[path], Request("POST", path, headers, body), out,
                                           acting=principal)
        return response, out

    # -- small endpoints -----------------------------------------------------------------
    async def _health(self, request: Request, out: dict[str, str]) -> Response:
        shedding = {"load_shedding": self.shedding.snapshot()} if self.shedding.enabled else {}
        return json_response({"status": "ok", "version": __version__, "environment": self.settings.environment,
                              **await self.observability.health(), **shedding})

    async def _models(self, request: Request, out: dict[str, str]) -> Response:
        principal = await self.access.authenticate(request)
        data = [{"id": alias, "object": "model", "created": 0, "owned_by": provider}
                for alias, provider in self.router.models() if principal.allows_model(alias)]
        return json_response({"object": "list", "data": data})

    async def _providers(self, request: Request, out: dict[str, str]) -> Response:
        detail, allows = await provider_view(request, self.settings, self.access)
        kinds = {p.name: p.kind for p in self.settings.providers}
        return json_response(self.upstream.report(self.router.routes(), kinds, detail=detail, allows=allows))

    async def _openapi(self, request: Request, out: dict[str, str]) -> Response:
        return Response(200, {"content-type": "application/json"},
                        json.dumps(self.routes.openapi(__version__), separators=(",", ":")).encode())

    async def _ws_without_upgrade(self, request: Request, out: dict[str, str]) -> Response:
        self.authorize_admin(request)
        raise GatewayError(426, "GET /ws needs a WebSocket upgrade ('Upgrade: websocket').",
                           code="upgrade_required", headers={"upgrade": "websocket"})
