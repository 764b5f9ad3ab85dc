"""The stage runner: every API operation's request, one way.

auth -> parse -> route (conditional aliases resolved) -> authorise the resolved route ->
prepare (the spec's own) -> input guard -> limits -> cache -> shedding -> upstream (retries
and failover for idempotent operations) -> settle -> output guard -> record. The order is
the rule: prices, guardrail policies and model permissions read the route the request
resolved to, and nothing the client chose is recorded before it is authenticated and routed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from ..accounting import Usage
from ..cache.layer import CacheLayer
from ..cache.predictive import PredictiveWarmer
from ..config import Settings
from ..errors import GatewayError, upstream_error
from ..guardrails.checks import Guardrails
from ..http import Headers, Request, Response
from ..metadata.tags import request_tags
from ..observability import tracing
from ..observability.alerts import Alerts
from ..observability.analytics import Analytics
from ..observability.profiler import Profiler
from ..observability.request_bodies import BodyLog
from ..overload.gate import ShedGate
from ..ports import Clock, UpstreamError, UpstreamResponse
from ..ratelimits.enforcer import Limits
from ..redaction import redact
from ..request_event import RequestEvent
from ..routing.routes import Router
from ..routing.upstream_call import PIN_HEADER, UpstreamCaller
from ..schemas import validation_error
from ..security import limits
from ..security.access import AccessControl, Principal
from ..security.privacy import client_address
from .context import RequestContext
from .pass_through import PassThrough
from .spec import OperationSpec

_MAX_ERROR_BODY = 4096


def _note_request_limit(out: dict[str, str], event: RequestEvent) -> None:
    """Copy the request-unit limit the client was told about into the analytics event
    (the hub's rate-limit saturation alert reads it)."""
    try:
        event["ratelimit_limit"] = float(out["x-ratelimit-limit-requests"])
        event["ratelimit_remaining"] = float(out["x-ratelimit-remaining-requests"])
    except (KeyError, ValueError):
        pass


class Pipeline:
    """Runs an :class:`OperationSpec` for a request; the only place request stages run."""

    def __init__(self, settings: Settings, clock: Clock, access: AccessControl, router: Router,
                 upstream: UpstreamCaller, ratelimits: Limits, analytics: Analytics, alerts: Alerts,
                 caching: CacheLayer, shedding: ShedGate, guardrails: Guardrails | None,
                 upstream_secrets: list[str], tasks: Any) -> None:
        self.settings = settings
        self.clock = clock
        self.access = access
        self.router = router
        self.upstream = upstream
        self.ratelimits = ratelimits
        self.analytics = analytics
        self.alerts = alerts
        self.caching = caching
        self.shedding = shedding
        self.guardrails = guardrails
        self.upstream_secrets = upstream_secrets
        self.tasks = tasks
        self.predictive: PredictiveWarmer | None = None  # set by the gateway (it re-asks through us)
        logs = settings.request_logs
        self.bodies = BodyLog(logs.bodies, logs.body_max_bytes, logs.private_routes) if logs.bodies != "off" else None

    # -- the runner ----------------------------------------------------------------------
    async def run(self, spec: OperationSpec, request: Request, out: dict[str, str],
                  acting: Principal | None = None) -> Response:
        """The whole request; ``acting`` set: on that key's behalf (cache warming)."""
        ctx = RequestContext(spec, request, out, Profiler(self.clock), self._new_event(request, out, spec.path),
                             acting=acting)
        predictive = self.predictive
        if spec.predictive and predictive is not None and predictive.enabled and acting is None:
            predictive.tick()
        try:
            response = await self._stages(ctx)
        except GatewayError as exc:
            ctx.event["error_code"] = exc.code
            exc.headers = {**out, **exc.headers}
            response = spec.error_response(exc)
        except Exception:
            self.finish(ctx, 500)
            raise
        if self.bodies is not None:
            self.bodies.keep_response(ctx.response_body, response)
        if not response.is_stream:  # a stream records its event when it ends
            self.finish(ctx, response.status)
        response.headers["server-timing"] = ctx.profiler.server_timing()
        return response

    async def admit(self, spec: OperationSpec, request: Request, out: dict[str, str],
                    acting: Principal | None = None) -> RequestContext:
        """The stages up to and with the limits, for an operation whose upstream is the host's
        own (a Realtime session: the host opens the provider's socket and relays). A refusal is
        recorded and raised; the caller finishes the context's event when the operation ends."""
        ctx = RequestContext(spec, request, out, Profiler(self.clock), self._new_event(request, out, spec.path),
                             acting=acting)
        try:
            await self._admit(ctx)
        except GatewayError as exc:
            ctx.event["error_code"] = exc.code
            exc.headers = {**out, **exc.headers}
            self.finish(ctx, exc.status)
            raise
        return ctx

    async def _stages(self, ctx: RequestContext) -> Response:
        await self._admit(ctx)
        hit = await self._cache_lookup(ctx) if ctx.spec.cache is not None else None
        if hit is not None:
            return hit
        return await self._upstream(ctx)

    async def _admit(self, ctx: RequestContext) -> None:
        """auth, parse, route, authorise, prepare, input guard, limits."""
        spec, request, profiler, event = ctx.spec, ctx.request, ctx.profiler, ctx.event
        with profiler.phase("auth"):  # first: a bad key costs no body parse (the body may be 1 MB)
            principal = ctx.acting or await self.access.authenticate(spec.credentials(request))
            ctx.principal = principal
        with profiler.phase("parse"):
            ctx.body = body = self.parse_body(request, spec)
            spec.check(body, self.settings)
            event["stream"] = ctx.stream = body.get("stream") is True
            tags = self._tag(request, principal, event)
        with profiler.phase("route"):  # before the limits: an unrouted model costs nothing
            named = body["model"]
            ctx.route = routed = self.router.pick(named, request.headers, body, tags, event)
            ctx.targets = self.upstream.pinned(self.router.resolve(routed), request.headers.get(PIN_HEADER))
            # Authorised against the route it resolved to as well as the alias it named.
            self.access.check_model(principal, named)
            if routed != named:
                self.access.check_model(principal, routed)
                event["route"] = routed
            # Labels only once authenticated and routed: junk cannot grow the metrics' label sets.
            event["key_id"], event["model"] = principal.key_id, named
            if principal.team is not None:
                event["team_id"] = principal.team.id
        if spec.prepare is not None:
            await spec.prepare(ctx)
        ctx.guard = self._guard_input(ctx)  # before the cache key: a redaction changes it
        with profiler.phase("ratelimit"):
            try:
                ctx.admission = await self.ratelimits.admit(request, principal, routed, spec.estimate(ctx),
                                                            ctx.out, event)
            finally:
                _note_request_limit(ctx.out, event)

    @staticmethod
    def new_headers(request: Request) -> dict[str, str]:
        """The headers every answer to ``request`` carries (as ``Gateway.handle`` makes them),
        for an operation a host serves outside it (a Realtime upgrade)."""
        return {"x-request-id": tracing.request_id(request.headers.get("x-request-id")),
                "traceparent": tracing.child_traceparent(request.headers.get("traceparent"))}

    def record_refusal(self, spec: OperationSpec, request: Request, out: dict[str, str], exc: GatewayError) -> None:
        """The one (unlabelled) event of a request refused before its stages ran (an
        operation's own credential, such as a Realtime client secret, was refused)."""
        ctx = RequestContext(spec, request, out, Profiler(self.clock), self._new_event(request, out, spec.path))
        ctx.event["error_code"] = exc.code
        self.finish(ctx, exc.status)

    # -- stages --------------------------------------------------------------------------
    def _new_event(self, request: Request, out: dict[str, str], path: str) -> RequestEvent:
        """The request's analytics event as every operation starts it (completed by :meth:`finish`)."""
        return {"ts": self.clock.now(), "request_id": out["x-request-id"],
                "trace_id": tracing.trace_id(out["traceparent"]), "span_id": tracing.span_id(out["traceparent"]),
                "parent_span_id": tracing.span_id(request.headers.get("traceparent")), "path": path, "status": 0,
                "model": None, "provider": None, "cache": None, "stream": False,
                "client": client_address(request.client_ip, self.settings.security.anonymize_ips)}

    def parse_body(self, request: Request, spec: OperationSpec) -> dict[str, Any]:
        """The body as the spec reads it (JSON unless it says otherwise), checked against its model."""
        body = spec.parse(request, self.settings)
        try:
            spec.body_model.model_validate(body)
        except ValidationError as exc:
            raise validation_error(exc) from None
        limits.check_chat(body, self.settings.security)
        return body

    def _tag(self, request: Request, principal: Principal, event: RequestEvent) -> dict[str, str]:
        """The request's tags (its key's defaults, then ``x-flaregate-metadata``) into the
        analytics event as ``tags``; a malformed header is a 400."""
        tags = request_tags(request.headers, principal.tags)
        if tags:
            event["tags"] = tags
            # Only allow-listed tags become /metrics labels: their values are the operator's.
            labelled = {k: v for k, v in tags.items() if k in self.settings.metrics_tag_labels}
            if labelled:
                event["metric_tags"] = labelled
            reported = {k: v for k, v in tags.items() if k in self.settings.report_tags}
            if reported:  # spend-report dimensions: listed tags only (client tags are unbounded)
                event["report_tags"] = reported
        return tags

    def _guard_input(self, ctx: RequestContext) -> Any:
        """The resolved route's (or key's) guardrail policy applied to the body (redacted in
        place; a block is a 400); returns the policy the answer goes through, if it has one."""
        principal = ctx.principal
        assert principal is not None
        policy = None
        if self.guardrails is not None:
            policy = self.guardrails.policy_for(ctx.route, principal.key_id, principal.name)
            self.guardrails.check_input(policy, ctx.body, ctx.event)
        if self.bodies is not None:  # after the guardrails' redactions
            ctx.response_body = self.bodies.keep_request(ctx.body, ctx.event, principal.policy.private is True)
        has_answer_check = ctx.spec.guard_payload is not None or ctx.spec.guard_response is not None
        return policy if has_answer_check else None

    def _guard_response(self, ctx: RequestContext, response: Response) -> Response:
        guard = ctx.spec.guard_response
        if guard is None or ctx.guard is None or self.guardrails is None or response.status != 200:
            return response
        return guard(self.guardrails, ctx.guard, response, ctx.event)

    async def _cache_lookup(self, ctx: RequestContext) -> Response | None:
        spec, event = ctx.spec, ctx.event
        assert spec.cache is not None and ctx.targets is not None and ctx.admission is not None
        with ctx.profiler.phase("cache"):
            assert ctx.principal is not None
            ctx.plan = plan = await self.caching.plan(ctx.request.headers, ctx.tenant, ctx.body, ctx.targets,
                                                      operation=spec.cache.operation, tags=event.get("tags"),
                                                      semantic=ctx.principal.policy.semantic_cache is not False)
            hit = await self.caching.lookup(plan, spec.cache.render, event)
        event["cache"] = plan.status
        if hit is None:
            return None
        predictive = self.predictive
        if spec.predictive and predictive is not None and predictive.enabled and ctx.acting is None:
            assert ctx.principal is not None
            predictive.saw_hit(plan, hit, ctx.body, ctx.principal)
        await ctx.admission.refund()  # nothing went upstream: the reserved tokens go back
        # A cached answer is stored as the provider gave it: the policy applies on every serve.
        return self._guard_response(ctx, self.caching.hit_response(plan, hit, ctx.out, event))

    async def _upstream(self, ctx: RequestContext) -> Response:
        spec, event, profiler, admission = ctx.spec, ctx.event, ctx.profiler, ctx.admission
        assert admission is not None and ctx.targets is not None and ctx.principal is not None
        forward = {"x-request-id": ctx.out["x-request-id"], "traceparent": ctx.out["traceparent"]}
        for name in spec.forward_headers:
            if ctx.request.headers.get(name):
                forward[name] = ctx.request.headers[name]
        ctx.upstream_started = started = self.clock.monotonic()
        try:  # only a miss takes a place among the in-flight upstream requests
            ctx.permit = self.shedding.admit(ctx.principal, ctx.request.headers, started)
        except GatewayError:
            event["shed"] = True
            await admission.refund()
            raise
        targets, body, stream = ctx.targets, ctx.body, ctx.stream
        binary = spec.answer(body) == "binary"

        def call() -> Any:
            return self.upstream.call(targets, body, forward, event, operation=spec.operation, stream=stream,
                                      idempotent=spec.idempotent, binary=binary)

        plan = ctx.plan
        try:
            if plan is not None and spec.cache is not None:
                target, upstream = await self.caching.fetch(plan, call, event, spec.cache.recorder)
            else:
                target, upstream = await call()
        except GatewayError as exc:  # every attempt failed: the answer still says how the cache was
            self._release(ctx, exc.status)
            profiler.add("upstream", (self.clock.monotonic() - started) * 1000)
            await admission.refund()
            if plan is not None:
                exc.headers.update({**self.caching.miss_headers(plan, None), **exc.headers})  # type: ignore[arg-type]
            raise
        profiler.add("upstream_ttfb", (self.clock.monotonic() - started) * 1000)
        event["provider"], event["upstream_status"] = target.provider.name, upstream.status
        event["upstream_model"] = target.model or body["model"]
        headers = {**ctx.out, "x-flaregate-provider": target.provider.name,
                   **(self.caching.miss_headers(plan, upstream) if plan is not None else {}),
                   "x-flaregate-attempts": str(event.get("attempts", 0)),
                   "content-type": upstream.headers.get("content-type", "application/json")}
        if binary and upstream.status == 200:
            headers["content-type"] = upstream.headers.get("content-type", "application/octet-stream")
            if not _textual(headers["content-type"]):
                ctx.response_body = None  # the request log keeps text, not audio
            return Response(200, headers, self._pass_through(ctx, upstream))
        if stream and upstream.status == 200:
            headers["cache-control"] = "no-cache"
            passed = self._pass_through_stream(ctx, upstream)
            relay = self._relay(ctx, upstream, target.provider.name, target.model, passed)
            if passed is not None:
                passed.copy = relay
                return Response(200, headers, passed)
            return self._guard_response(ctx, Response(200, headers, relay))
        return await self._whole(ctx, upstream, headers, target.provider.name, target.model)

    async def _whole(self, ctx: RequestContext, upstream: UpstreamResponse, headers: dict[str, str],
                     provider: str, upstream_model: str) -> Response:
        spec, event, admission = ctx.spec, ctx.event, ctx.admission
        assert admission is not None
        try:
            payload = await upstream.read()
        except UpstreamError as exc:
            await admission.refund()
            raise upstream_error(502, f"Upstream provider '{provider}' broke the connection: {exc}") from None
        finally:
            await upstream.aclose()
            self._release(ctx, upstream.status)
            # Retries and failover included: "upstream" is all the time spent on providers.
            ctx.profiler.add("upstream", (self.clock.monotonic() - ctx.upstream_started) * 1000)
        with ctx.profiler.phase("format"):
            if upstream.status != 200:
                headers.update(await admission.refund())
                return self.upstream_failure_response(spec, upstream.status, upstream.headers, payload, headers)
            try:
                answer = json.loads(payload)
                tokens_in, tokens_out = spec.usage(answer)
            except (ValueError, AttributeError):
                await admission.refund()
                raise upstream_error(502, f"Upstream provider '{provider}' returned malformed JSON.",
                                     code="upstream_malformed_response") from None
            collapsed = event.get("cache_collapsed")
            if not collapsed:  # a shared answer cost nothing: tokens_saved
                event["tokens_in"], event["tokens_out"] = tokens_in, tokens_out
            if ctx.guard is not None and spec.guard_payload is not None and self.guardrails is not None:
                guarded = spec.guard_payload(self.guardrails, ctx.guard, payload, event)
                if guarded is not payload:
                    payload, answer = guarded, json.loads(guarded)
            if collapsed:  # another request's answer: nothing spent upstream
                headers.update(await admission.refund())
            else:
                real = Usage(tokens_in, tokens_out if isinstance(tokens_out, int) else 0) \
                    if isinstance(tokens_in, int) else None
                headers.update(await admission.settle(real, provider, upstream_model))
            if spec.answered is not None:
                spec.answered(ctx, answer)
        self.caching.mark_stored(headers, upstream)
        return Response(200, headers, payload)

    @staticmethod
    def _pass_through_stream(ctx: RequestContext, upstream: UpstreamResponse) -> PassThrough | None:
        """The stream as the host's native body (read here from a copy) when nothing changes
        its bytes: no answer guardrail, no request-log copy of the answer, and a transport
        that can split an untranslated body (the edge's)."""
        if ctx.guard is not None or ctx.response_body is not None:
            return None
        split = getattr(upstream, "tee", None)
        teed = split() if split is not None else None
        return PassThrough(teed) if teed is not None else None

    async def _relay(self, ctx: RequestContext, upstream: UpstreamResponse, provider: str,
                     upstream_model: str, passed: PassThrough | None = None) -> AsyncIterator[bytes]:
        """Pass the stream through chunk by chunk (the spec's watch reads it as it goes); a
        broken stream ends with an explicit error event in the operation's own dialect.
        ``passed``: the client has the bytes natively, this reads the copy; the error event
        goes to ``passed.tail`` (see :meth:`PassThrough.end_with`)."""
        event, admission = ctx.event, ctx.admission
        assert admission is not None
        watch = ctx.spec.watch(ctx)
        started = False
        outcome = "complete"
        try:
            async for chunk in upstream.aiter_bytes():
                if chunk:
                    if not started:  # time to first token: the first chunk the client gets
                        started = True
                        event["ttft_ms"] = round(ctx.profiler.elapsed_ms(), 3)
                    watch.feed(chunk)
                    yield chunk
            if not watch.complete():
                outcome = "truncated"
                message, code = "The upstream stream ended before completion.", "upstream_stream_truncated"
                if passed is None:
                    yield watch.error_event(message, code)
                else:
                    passed.end_with(watch.error_event(message, code), message, code)
        except UpstreamError as exc:
            outcome = "interrupted"
            # A cap the stream ran into names its own code (upstream_event_too_large, ...).
            code = getattr(exc, "code", None) or "upstream_stream_interrupted"
            message = f"The upstream stream was interrupted: {exc}"
            if passed is None:
                yield watch.error_event(message, code)
            else:
                passed.end_with(watch.error_event(message, code), message, code, exc)
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "aborted"  # the client went away; not an upstream error
            raise
        finally:
            await self._stream_ended(ctx, upstream, outcome)
            usage = watch.usage()
            collapsed = event.get("cache_collapsed")
            if usage is not None and not collapsed:
                event["tokens_in"], event["tokens_out"] = usage.prompt_tokens, usage.completion_tokens
            if ctx.spec.streamed is not None:
                ctx.spec.streamed(ctx, watch)
            self.finish(ctx, 200)
            if collapsed:  # another request's stream: nothing spent upstream
                self.tasks.run(admission.settle_later(None, provider, upstream_model))
            elif usage is not None:
                self.tasks.run(admission.settle_later(usage, provider, upstream_model))
            else:
                admission.keep()  # no usage in the stream: the estimate stands

    async def _pass_through(self, ctx: RequestContext, upstream: UpstreamResponse) -> AsyncIterator[bytes]:
        """A binary answer, passed through chunk by chunk as it comes (never read whole, never
        parsed), recorded once at its end like a stream: its bytes in ``response_bytes``. It
        has no usage to read: the limits' estimate stands. A break mid-body is raised to the
        host, which cuts the connection: no error event fits in a binary body, and a clean
        end would pass a short file off as whole."""
        event, admission = ctx.event, ctx.admission
        assert admission is not None
        sent = 0
        outcome = "complete"
        try:
            async for chunk in upstream.aiter_bytes():
                if chunk:
                    if not sent:
                        event["ttft_ms"] = round(ctx.profiler.elapsed_ms(), 3)
                    sent += len(chunk)
                    yield chunk
        except UpstreamError as exc:
            outcome = "interrupted"
            event["error_code"] = getattr(exc, "code", None) or "upstream_stream_interrupted"
            raise
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "aborted"  # the client went away; not an upstream error
            raise
        finally:
            event["response_bytes"] = sent
            await self._stream_ended(ctx, upstream, outcome)
            self.finish(ctx, 200)
            admission.keep()

    async def _stream_ended(self, ctx: RequestContext, upstream: UpstreamResponse, outcome: str) -> None:
        """What every streamed answer does at its end, whatever the dialect: close the upstream,
        give its place back, charge the time, record how it ended."""
        await upstream.aclose()
        self._release(ctx, 200)
        ctx.profiler.add("upstream", (self.clock.monotonic() - ctx.upstream_started) * 1000)
        ctx.event["stream_outcome"] = outcome
        if outcome not in ("complete", "aborted"):
            ctx.event["error"] = outcome

    def _release(self, ctx: RequestContext, status: int) -> None:
        """Give the upstream place back; 429/503/504 tell the adaptive limit to back off."""
        if ctx.permit is not None:
            ctx.permit.release(now=self.clock.monotonic(), dropped=status in (429, 503, 504))
            ctx.permit = None

    # -- the end -------------------------------------------------------------------------
    def finish(self, ctx: RequestContext, status: int) -> None:
        """Complete the request's analytics event and hand it to the hub's batch."""
        event, profiler = ctx.event, ctx.profiler
        if self.bodies is not None:
            self.bodies.finish(event, ctx.response_body)
        event["status"] = status
        event["latency_ms"] = round(profiler.elapsed_ms(), 3)
        event["phases"] = profiler.snapshot()
        if "upstream" in event["phases"]:
            event["upstream_ms"] = event["phases"]["upstream"]
        self.analytics.record(event)
        self.alerts.request_finished(status)

    def upstream_failure_response(self, spec: OperationSpec, status: int, upstream_headers: Any, payload: bytes,
                                  headers: dict[str, str]) -> Response:
        """Relay a provider's error honestly, in the operation's error shape, never its 5xx as ours."""
        try:
            parsed = json.loads(payload[:_MAX_ERROR_BODY])
            error = parsed.get("error") if isinstance(parsed, dict) else None
            message = (error.get("message") if isinstance(error, dict) else None) or str(error or "")
        except ValueError:
            message = ""
        provider = headers.get("x-flaregate-provider", "upstream")
        message = redact(message, self.upstream_secrets)[:500]  # providers may echo a key (cut after: no fragment)
        message = f"Upstream provider '{provider}' answered {status}" + (f": {message}" if message else ".")
        if status >= 500:
            exc = upstream_error(502, message)
        elif status == 429:
            exc = GatewayError(429, message, type="rate_limit_error", code="upstream_rate_limited")
            # Retry-After on every 429: the provider's when it sent one, else a short wait.
            exc.headers["retry-after"] = upstream_headers.get("retry-after") or "1"
        else:
            exc = GatewayError(status, message, type="invalid_request_error", code="upstream_rejected")
        exc.headers = {**headers, **exc.headers}
        return spec.error_response(exc)


def _textual(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media.startswith("text/") or media.endswith(("/json", "+json"))


def with_bearer(request: Request, token: str) -> Request:
    """The request with ``token`` as its bearer key (for keys that arrive in another header)."""
    return dataclasses.replace(request, headers=Headers([*request.headers.items(), ("authorization", f"Bearer {token}")]))
