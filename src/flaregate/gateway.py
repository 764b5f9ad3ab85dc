"""The gateway core: one request in, one response out, every step of the seed's flow.

parse+validate -> auth -> rate limit -> route -> cache -> upstream (with failover) ->
analytics -> cache store -> format. Hosts call :meth:`Gateway.handle`; ``/ws`` is the
host's (it needs an upgrade) but authorisation goes through :meth:`Gateway.authorize`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from . import __version__
from .accounting import PriceTable, StreamUsage, usage_from
from .cache.admin import CacheAdmin
from .cache.layer import CacheLayer
from .cache.predictive import PredictiveWarmer
from .cache.warming import CacheWarming
from .config import Settings
from .endpoints import EMBEDDINGS_PATH, MESSAGES_PATH, UpstreamEndpoints
from .errors import GatewayError, upstream_error
from .guardrails import Guardrails
from .http import Request, Response, json_response
from .observability import tracing
from .observability.alerts import Alerts
from .observability.analytics import Analytics
from .observability.endpoints import Observability
from .observability.operational_events import OperationalEvents
from .observability.profiler import Profiler
from .overload.gate import ShedGate
from .overload.shedder import Permit
from .ports import Ports, UpstreamError, UpstreamResponse
from .providers.build import build_providers
from .ratelimits import admin as limits_admin
from .ratelimits.enforcer import Admission, Limits
from .redaction import redact
from .responses.endpoint import RESPONSES_PATH, ResponsesEndpoint
from .routing.routes import Router, Target
from .routing.upstream_call import PIN_HEADER, UpstreamCaller
from .security.access import AccessControl, Principal
from .security.admin_api import AdminApi
from .security.gate import SecurityGate
from .security.keys import KeyRing
from .security.webhooks import WebhookDispatcher
from .steps import RequestSteps

log = logging.getLogger("flaregate")

CHAT_PATH = "/v1/chat/completions"


def _stream_error_event(message: str, code: str) -> bytes:
    error = {"error": {"message": message, "type": "api_error", "code": code, "param": None}}
    return b"data: " + json.dumps(error).encode() + b"\n\n"


def _note_request_limit(out: dict[str, str], event: dict[str, Any]) -> None:
    """Copy the request-unit limit the client was told about into the analytics event
    (the hub's rate-limit saturation alert reads it)."""
    try:
        event["ratelimit_limit"] = float(out["x-ratelimit-limit-requests"])
        event["ratelimit_remaining"] = float(out["x-ratelimit-remaining-requests"])
    except (KeyError, ValueError):
        pass


def _release(permit: Permit | None, now: float, status: int) -> None:
    """Give the upstream place back; 429/503/504 tell the adaptive limit to back off."""
    if permit is not None:
        permit.release(now=now, dropped=status in (429, 503, 504))


class Gateway:
    def __init__(self, settings: Settings, ports: Ports, keys: KeyRing | None = None) -> None:
        self.settings = settings
        self.ports = ports
        self.keys = keys if keys is not None else KeyRing(k.get_secret_value() for k in settings.api_keys)
        self.router = Router(settings, build_providers(settings, ports.upstream, ports.ai))
        self.caching = CacheLayer(settings, ports)
        self.shedding = ShedGate(settings.shedding)
        self.predictive = PredictiveWarmer(settings, ports, self._chat)
        cache_admin = CacheAdmin(self.caching, lambda: {"predictive": self.predictive.stats()})
        self.analytics = Analytics(ports.metrics_hub, ports.tasks, batch_size=settings.analytics_batch_size,
                                   batch_delay_ms=settings.analytics_batch_delay_ms,
                                   prices=PriceTable(settings.routes))
        self.observability = Observability(settings, ports.metrics_hub, ports.clock, self.analytics.changes)
        self._routes: dict[tuple[str, str], Callable[[Request, dict[str, str]], Awaitable[Response]]] = {
            ("GET", "/health"): self._health,
            ("GET", "/v1/models"): self._models,
            ("POST", CHAT_PATH): self._chat,
            ("GET", "/v1/providers"): self._providers,
            ("POST", "/admin/cache/purge"): cache_admin.purge,
            ("GET", "/admin/cache/stats"): cache_admin.stats,
            **self.observability.routes(),
        }
        self._paths = {path for _, path in self._routes} | {"/ws"}
        # Keys, signing, limits, CORS, webhooks: see access.py, security_gate.py, webhooks.py.
        security = settings.security
        self.access = AccessControl(self.keys, ports.security, ports.clock, security.key_cache_seconds)
        self.gate = SecurityGate(settings, ports.clock, ports.security)
        self.webhooks = WebhookDispatcher(security, ports.security, ports.upstream, ports.tasks, ports.clock)
        self.alerts = Alerts(self.webhooks, ports.clock)
        events = OperationalEvents(self.analytics, self.alerts, self.webhooks)
        self.upstream = UpstreamCaller(settings, ports.clock, events.emit, on_attempt=self.alerts.upstream_result)
        self.admin_api = AdminApi(settings, ports.security, self.access, self.webhooks, ports.clock)
        self.ratelimits = Limits(settings, ports.rate_limiter, ports.clock, self.analytics, self.alerts)
        self._ratelimits_admin = limits_admin.RateLimitAdmin(settings, self.ratelimits)
        self.cache_warming = CacheWarming(settings, ports, self.access, self._chat)
        self.steps = RequestSteps(
            settings, ports.clock, self.access, self.router, self.upstream, self.ratelimits, self.analytics,
            self.alerts, [p.api_key.get_secret_value() for p in settings.providers if p.api_key],
            Guardrails(settings.guardrails) if settings.guardrails.policies else None)
        endpoints = UpstreamEndpoints(self.steps)
        self._routes[("POST", EMBEDDINGS_PATH)] = endpoints.embeddings
        self._routes[("POST", MESSAGES_PATH)] = endpoints.messages
        self._routes[("POST", RESPONSES_PATH)] = ResponsesEndpoint(self.steps, ports.cache, ports.tasks,
                                                                      self.caching).handle
        self._paths.add(RESPONSES_PATH)

    # -- entry points --------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        rid = tracing.request_id(request.headers.get("x-request-id"))
        out_headers = {"x-request-id": rid, "traceparent": tracing.child_traceparent(request.headers.get("traceparent"))}
        try:
            response = await self.gate.screen(request)
            if response is None:
                handler = (self._routes.get((request.method, request.path)) or self.admin_api.route(request)
                           or self._ratelimit_admin_route(request) or self.observability.route(request)
                           or self.cache_warming.route(request))
                if handler is None:
                    raise self._no_route(request)
                response = await handler(request, out_headers)
        except GatewayError as exc:
            response = exc.to_response()
        except Exception:
            log.exception("unhandled error in request %s", rid)
            response = GatewayError(500, "Internal gateway error.", type="api_error", code="internal_error").to_response()
        for name, value in out_headers.items():
            response.headers.setdefault(name, value)
        self.gate.finish(request, response)
        return response

    async def authorize(self, request: Request) -> str:
        """Check the gateway key of a non-API request such as ``/ws``; raise GatewayError."""
        return (await self.access.authenticate(request)).key_id

    def authorize_admin(self, request: Request) -> str | None:
        """Check the admin key of ``/ws`` (header, ``?token=`` or subprotocol); raise
        GatewayError. Returns the subprotocol the WebSocket handshake must select.
        Synchronous on purpose: nothing to await, so no call site can forget to."""
        return self.observability.authorize(request)

    def _no_route(self, request: Request) -> GatewayError:
        if request.path in self._paths:
            allowed = sorted(m for m, p in self._routes if p == request.path) or ["GET"]
            return GatewayError(405, f"Method {request.method} is not allowed on {request.path}.",
                                code="method_not_allowed", headers={"allow": ", ".join(allowed)})
        return GatewayError(404, f"Unknown path {redact(request.path[:200])}.", code="unknown_url")

    # -- small endpoints -----------------------------------------------------------------
    def _ratelimit_admin_route(self, request: Request) -> Callable[[Request, dict[str, str]], Awaitable[Response]] | None:
        return self._ratelimit_admin if request.path.startswith(limits_admin.PREFIX) else None

    async def _ratelimit_admin(self, request: Request, out: dict[str, str]) -> Response:
        return await self._ratelimits_admin.handle(request)

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
        await self.authorize(request)
        kinds = {p.name: p.kind for p in self.settings.providers}
        return json_response(self.upstream.report(self.router.routes(), kinds))

    # -- chat completions ----------------------------------------------------------------
    async def _chat(self, request: Request, out: dict[str, str], principal: Principal | None = None) -> Response:
        """A chat completion; ``principal`` set: on that key's behalf (cache warming)."""
        profiler = Profiler(self.ports.clock)
        event = self.steps.new_event(request, out, CHAT_PATH)
        if self.predictive.enabled and principal is None:
            self.predictive.tick()
        try:
            response = await self._chat_steps(request, out, profiler, event, principal)
            response = self.steps.guard_output(event.pop("_guard", None), response, event)
        except GatewayError as exc:
            event.pop("_guard", None)  # the policy object never reaches the analytics event
            event["error_code"] = exc.code
            response = exc.to_response()
        except Exception:
            event.pop("_guard", None)
            self.steps.finish(event, 500, profiler)
            raise
        self.steps.answered(event, response, profiler)  # a stream records its event when it ends
        response.headers["server-timing"] = profiler.server_timing()
        return response

    async def _chat_steps(self, request: Request, out: dict[str, str], profiler: Profiler,
                          event: dict[str, Any], acting: Principal | None = None) -> Response:
        with profiler.phase("parse"):
            body = self.steps.parse_body(request)
            event["stream"] = stream = body.get("stream") is True
        with profiler.phase("auth"):
            principal = acting or await self.access.authenticate(request)
            self.access.check_model(principal, body["model"])
            self.steps.tag(request, principal, event)
            tenant = principal.key_id
            # Labels only for authenticated requests: junk cannot grow the metrics' label sets.
            event.update(key_id=tenant, model=body["model"])
        with profiler.phase("route"):  # before the limits: an unrouted model costs nothing
            routed = self.router.pick(body["model"], request.headers, body, event.get("tags") or {}, event)
            targets = self.upstream.pinned(self.router.resolve(routed), request.headers.get(PIN_HEADER))
        event["_guard"] = self.steps.guard_input(body, principal, event)  # before the cache key
        with profiler.phase("ratelimit"):
            try:
                admission = await self.ratelimits.admit(request, principal, body["model"], body, out, event)
            finally:
                _note_request_limit(out, event)
        with profiler.phase("cache"):
            plan = await self.caching.plan(request.headers, tenant, body, targets, tags=event.get("tags"))
            hit = await self.caching.lookup(plan)
        event["cache"] = plan.status
        if hit is not None:
            if self.predictive.enabled and acting is None:
                self.predictive.saw_hit(plan, hit, body, principal)
            await admission.refund()  # nothing went upstream: the reserved tokens go back
            return self.caching.hit_response(plan, hit, out, event)
        forward = {"x-request-id": out["x-request-id"], "traceparent": out["traceparent"]}
        upstream_started = self.ports.clock.monotonic()
        try:  # only a miss takes a place among the in-flight upstream requests
            permit = self.shedding.admit(principal, request.headers, upstream_started)
        except GatewayError:
            event["shed"] = True
            await admission.refund()
            raise
        try:
            target, upstream = await self.caching.fetch(
                plan, lambda: self.upstream.call(targets, body, forward, event), event)
        except GatewayError as exc:  # every attempt failed: the answer still says how the cache was
            _release(permit, self.ports.clock.monotonic(), exc.status)
            profiler.add("upstream", (self.ports.clock.monotonic() - upstream_started) * 1000)
            await admission.refund()
            exc.headers.update({**self.caching.miss_headers(plan, None), **exc.headers})  # type: ignore[arg-type]
            raise
        profiler.add("upstream_ttfb", (self.ports.clock.monotonic() - upstream_started) * 1000)
        event.update(provider=target.provider.name, upstream_model=target.model or body["model"],
                     upstream_status=upstream.status)
        headers = {**out, "x-flaregate-provider": target.provider.name, **self.caching.miss_headers(plan, upstream),
                   "x-flaregate-attempts": str(event.get("attempts", 0)),
                   "content-type": upstream.headers.get("content-type", "application/json")}
        if stream and upstream.status == 200:
            headers["cache-control"] = "no-cache"
            return Response(200, headers, self._relay(upstream, profiler, event, admission, target, upstream_started,
                                                      permit))
        try:
            payload = await upstream.read()
        except UpstreamError as exc:
            await admission.refund()
            raise upstream_error(502, f"Upstream provider '{target.provider.name}' broke the connection: {exc}") from None
        finally:
            await upstream.aclose()
            _release(permit, self.ports.clock.monotonic(), upstream.status)
            # Retries and failover included: "upstream" is all the time spent on providers.
            profiler.add("upstream", (self.ports.clock.monotonic() - upstream_started) * 1000)
        with profiler.phase("format"):
            if upstream.status != 200:
                headers.update(await admission.refund())
                return self.steps.upstream_failure_response(upstream.status, upstream.headers, payload, headers)
            try:
                completion = json.loads(payload)
                usage = completion.get("usage") or {}
                if not event.get("cache_collapsed"):  # a shared answer cost nothing: tokens_saved
                    event["tokens_in"] = usage.get("prompt_tokens")
                    event["tokens_out"] = usage.get("completion_tokens")
            except (ValueError, AttributeError):
                await admission.refund()
                raise upstream_error(502, f"Upstream provider '{target.provider.name}' returned malformed JSON.",
                                     code="upstream_malformed_response") from None
            if event.get("cache_collapsed"):  # another request's answer: nothing spent upstream
                headers.update(await admission.refund())
            else:
                headers.update(await admission.settle(usage_from(completion), target.provider.name, target.model))
        self.caching.mark_stored(headers, upstream)
        return Response(200, headers, payload)

    async def _relay(self, upstream: UpstreamResponse, profiler: Profiler, event: dict[str, Any],
                     admission: Admission, target: Target, started: float,
                     permit: Permit | None = None) -> AsyncIterator[bytes]:
        """Pass SSE through chunk by chunk; a broken stream ends with an explicit error event."""
        tail = b""
        outcome = "complete"
        sniffer = StreamUsage() if admission.needs_usage else None
        try:
            async for chunk in upstream.aiter_bytes():
                if chunk:
                    if not tail:  # time to first token: the first chunk the client gets
                        event["ttft_ms"] = round(profiler.elapsed_ms(), 3)
                    tail = (tail + chunk)[-64:]
                    if sniffer is not None:
                        sniffer.feed(chunk)
                    yield chunk
            if b"[DONE]" not in tail:
                outcome = "truncated"
                yield _stream_error_event("The upstream stream ended before completion.", "upstream_stream_truncated")
                yield b"data: [DONE]\n\n"
        except UpstreamError as exc:
            outcome = "interrupted"
            yield _stream_error_event(f"The upstream stream was interrupted: {exc}", "upstream_stream_interrupted")
            yield b"data: [DONE]\n\n"
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "aborted"  # the client went away; not an upstream error
            raise
        finally:
            await upstream.aclose()
            _release(permit, self.ports.clock.monotonic(), 200)
            profiler.add("upstream", (self.ports.clock.monotonic() - started) * 1000)
            event["stream_outcome"] = outcome
            if outcome not in ("complete", "aborted"):
                event["error"] = outcome
            self.steps.finish(event, 200, profiler)
            usage = sniffer.usage() if sniffer is not None else None
            if event.get("cache_collapsed"):  # another request's stream: nothing spent upstream
                self.ports.tasks.run(admission.settle_later(None, target.provider.name, target.model))
            elif usage is not None:
                self.ports.tasks.run(admission.settle_later(usage, target.provider.name, target.model))
            else:
                admission.keep()  # no usage in the stream: the estimate stands
