"""``/v1/realtime``: what the gateway decides before a host upgrades the connection.

:meth:`Realtime.open` runs the upgrade through the one pipeline (``Pipeline.admit`` with the
spec of ``operation.py``): the key (``Authorization: Bearer``, the browser subprotocol
``openai-insecure-api-key.<key>``, or an ephemeral ``ek_`` secret used once), the route of
``?model=`` (unknown: 404; authorised against the alias and the route it resolved to), a
target that speaks the Realtime API (provider kind ``openai``; any other: 400), the key's
limits (one request unit: 429 with ``Retry-After``); then a session slot
(``REALTIME_MAX_SESSIONS_PER_KEY``: 429). Any refusal is an HTTP answer, never a 101. The host
then opens the provider's socket with the gateway's own credential and runs the
:class:`~.relay.Relay` between the two; the session's end writes its one request-log record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import quote, urlsplit

from ..errors import GatewayError, bad_request, upstream_error
from ..http import Request, Response
from ..pipeline.context import RequestContext
from ..pipeline.runner import Pipeline
from ..ports import Clock, SecurityStoreClient
from ..providers.settings import ProviderConfig
from ..request_event import RequestEvent
from ..routing.routes import Target
from ..security import limits as input_limits
from ..security.access import Principal
from . import events
from .client_secrets import PREFIX as SECRET_PREFIX
from .client_secrets import ClientSecrets, session_update
from .metering import SessionMeter
from .operation import PATH, offered_protocols, presented_key, realtime_spec
from .relay import Relay, Socket
from .settings import RealtimeSettings
from .slots import SessionSlots

log = logging.getLogger("flaregate.realtime")

REALTIME_KINDS = frozenset({"openai"})
CLEAN_ENDS = ("client_closed", "upstream_closed")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One target's Realtime socket: where, with which credential."""

    url: str  # ws:// or wss://
    headers: dict[str, str]
    provider: str
    model: str


@dataclasses.dataclass
class Session:
    """An admitted session: the targets to try in order (the route's Realtime-capable ones
    whose circuit lets them be tried), and the relay the host runs once one accepts."""

    relay: Relay
    endpoints: list[Endpoint]
    subprotocol: str | None  # what the 101 selects (never the protocol carrying the key)
    first_frames: list[str]  # sent upstream before any client frame (an ephemeral secret's session)
    _opened: Callable[[Session, Endpoint, bool, str], None]

    def start(self, endpoint: Endpoint, client: Socket, upstream: Socket) -> None:
        """``endpoint`` accepted: relay between the two sockets."""
        self._opened(self, endpoint, True, "")
        for frame in self.first_frames:
            upstream.send(frame)
        self.relay.start(client, upstream)

    def failed(self, endpoint: Endpoint, message: str) -> None:
        """``endpoint`` refused or could not be reached: counted against its health; the
        host tries the next one."""
        self._opened(self, endpoint, False, message)

    def abandon(self) -> None:
        """The client left before the upgrade: the session ends unopened."""
        self.relay.end("client_closed", events.NORMAL, "client left", client_gone=True)

    def refuse(self, client: Socket, refusal: GatewayError) -> None:
        """No endpoint accepted (``refusal``: why, from :func:`no_provider`): the client, its
        upgrade accepted, gets an ``error`` event the SDK yields and a close 1011, as when a
        provider drops a session; the session ends unopened, recorded as a 502."""
        self.relay.client = client
        self.relay.end("upstream_refused", events.UPSTREAM_ERROR, "no provider accepted", events.error_event(
            refusal.code or "upstream_refused", refusal.message, type="server_error"))


def no_provider(reasons: list[str]) -> GatewayError:
    """Why no endpoint accepted (``reasons``: one per endpoint tried, as the hosts word them)."""
    refused = any("answered" in r for r in reasons)
    return upstream_error(502, f"No provider accepted the Realtime session: {'; '.join(reasons)}.",
                          code="upstream_refused" if refused else "upstream_unreachable")


class Realtime:
    def __init__(self, settings: Any, clock: Clock, pipeline: Pipeline, security: SecurityStoreClient | None) -> None:
        self.settings: RealtimeSettings = settings.realtime
        self._clock = clock
        self._pipeline = pipeline
        self._providers: dict[str, ProviderConfig] = {p.name: p for p in settings.providers}
        self._slots = SessionSlots(self.settings, clock, security)
        self.secrets = ClientSecrets(self.settings, clock, pipeline.access, security,
                                     settings.security.max_json_depth)
        self.spec = realtime_spec(self._prepare)
        self._security_settings = settings.security

    # -- before the upgrade ----------------------------------------------------------------
    async def open(self, request: Request) -> Session:
        """Admit a session or raise GatewayError (the host answers it before any upgrade)."""
        out = self._pipeline.new_headers(request)
        try:
            input_limits.check_headers(request.headers, self._security_settings)  # 431, as security/gate.py
        except GatewayError as exc:
            exc.headers = {**out, **exc.headers}
            self._pipeline.record_refusal(self.spec, request, out, exc)
            raise
        acting: Principal | None = None
        first_frames: list[str] = []
        token = presented_key(request)
        if token is not None and token.startswith(SECRET_PREFIX):
            acting, request, first_frames = await self._redeem(token, request, out)
        ctx = await self._pipeline.admit(self.spec, request, out, acting=acting)
        try:
            return await self._session(ctx, request, first_frames)
        except GatewayError as exc:
            assert ctx.admission is not None
            await ctx.admission.refund()
            ctx.event["error_code"] = exc.code
            exc.headers = {**out, **exc.headers}
            self._pipeline.finish(ctx, exc.status)
            raise

    async def _redeem(self, token: str, request: Request, out: dict[str, str]) -> tuple[Principal, Request, list[str]]:
        try:
            principal, model, config = await self.secrets.redeem(token, PATH)
            asked = request.query.get("model")
            if asked and asked != model:
                raise GatewayError(403, f"This client secret is for the model '{model}'.", type="permission_error",
                                   code="model_not_allowed", param="model")
        except GatewayError as exc:  # before the pipeline: recorded here, unlabelled like any bad key
            exc.headers = {**out, **exc.headers}
            self._pipeline.record_refusal(self.spec, request, out, exc)
            raise
        frame = session_update(config)
        return principal, dataclasses.replace(request, query={**request.query, "model": model}), \
            [frame] if frame else []

    async def _prepare(self, ctx: RequestContext) -> None:
        """After the route, before the limits: a target that speaks Realtime, or a 400."""
        assert ctx.targets is not None
        self._realtime_targets(ctx.targets, ctx.body["model"])

    def _realtime_targets(self, targets: list[Target], model: str) -> list[Target]:
        """The route's targets that speak Realtime, in its order, those whose circuit or
        cooldown keeps them out of the way last; none: a 400."""
        capable = [t for t in targets if (c := self._providers.get(t.provider.name)) is not None
                   and c.kind in REALTIME_KINDS]
        if not capable:
            kinds = sorted({self._providers[t.provider.name].kind for t in targets
                            if t.provider.name in self._providers})
            raise bad_request(f"The model '{model}' is routed to a provider that does not speak the Realtime API "
                              f"({', '.join(kinds) or 'none'}); route it to an OpenAI provider.", param="model",
                              code="realtime_not_supported")
        health = self._pipeline.upstream.health

        def waiting(target: Target) -> bool:
            h = health.get(target.provider.name, target.model)
            return health.circuit_wait(h) > 0 or health.cooldown_wait(h) > 0

        return sorted(capable, key=waiting)  # stable: the route's order otherwise

    async def _session(self, ctx: RequestContext, request: Request, first_frames: list[str]) -> Session:
        assert ctx.principal is not None and ctx.admission is not None and ctx.targets is not None
        principal, event = ctx.principal, ctx.event
        endpoints = [self._upstream_endpoint(self._providers[t.provider.name], t, ctx.out)
                     for t in self._realtime_targets(ctx.targets, ctx.body["model"])]
        # The session keeps its request unit; its tokens are reserved response by response.
        await ctx.admission.refund()
        session_id = ctx.out["x-request-id"]
        await self._slots.take(principal.key_id, session_id)
        guardrails = self._pipeline.guardrails
        policy = guardrails.policy_for(ctx.route, principal.key_id, principal.name) if guardrails else None
        meter = SessionMeter(self._pipeline.ratelimits, self._pipeline.analytics, request, principal, ctx.route,
                             event, guardrails, policy)
        relay = Relay(self.settings, self._clock, meter, policy is not None, lambda r: self._finished(r, ctx))
        chosen = "realtime" if "realtime" in offered_protocols(request.headers) else None
        asyncio.ensure_future(self._slots.hold(principal.key_id, session_id, relay.done))
        return Session(relay, endpoints, chosen, first_frames, partial(self._opened, meter, event))

    def _upstream_endpoint(self, config: ProviderConfig, target: Target, out: dict[str, str]) -> Endpoint:
        model = target.model
        base = (config.base_url or "").rstrip("/")
        ws_base = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
        headers = {"x-request-id": out["x-request-id"], "traceparent": out["traceparent"]}
        key = config.api_key.get_secret_value() if config.api_key is not None else None
        version = self.settings.azure_api_versions.get(config.name)
        if version is not None:  # Azure OpenAI: /openai/realtime?api-version=..&deployment=.., an api-key header
            split = urlsplit(ws_base)
            if key:
                headers["api-key"] = key
            return Endpoint(f"{split.scheme}://{split.netloc}/openai/realtime?api-version={quote(version)}"
                            f"&deployment={quote(model)}", headers, config.name, model)
        if key:
            headers["authorization"] = f"Bearer {key}"
        return Endpoint(f"{ws_base}/realtime?model={quote(model)}", headers, config.name, model)

    # -- the provider's answer and the session's end ---------------------------------------------
    def _opened(self, meter: SessionMeter, event: RequestEvent, session: Session, endpoint: Endpoint, ok: bool,
                message: str) -> None:
        health = self._pipeline.upstream.health
        target = health.get(endpoint.provider, endpoint.model)
        if ok:
            health.success(target)
            meter.connected(endpoint.provider, endpoint.model)
            event["provider"], event["upstream_model"], event["upstream_status"] = endpoint.provider, endpoint.model, 101
            event["attempts"] = len(event.get("failed_providers", [])) + 1
            event["failovers"] = event["attempts"] - 1
        else:
            health.failure(target, "connect", message[:200])
            event.setdefault("failed_providers", []).append(endpoint.provider)

    async def _finished(self, relay: Relay, ctx: RequestContext) -> None:
        """The session's one request-log record, its slot given back, a drop counted."""
        assert ctx.principal is not None
        stats, event = relay.stats, ctx.event
        if stats.ended == "upstream_dropped":
            health = self._pipeline.upstream.health
            health.failure(health.get(str(event.get("provider")), str(event.get("upstream_model"))), "disconnect",
                           "the provider dropped a Realtime session")
        await self._slots.release(ctx.principal.key_id, ctx.out["x-request-id"])
        duration = self._clock.monotonic() - stats.started
        ctx.profiler.add("upstream", duration * 1000)  # a session's time is the provider's, not overhead
        clean = stats.ended in CLEAN_ENDS
        event["stream_outcome"] = "complete" if clean else stats.ended
        if not clean:
            event["error"] = stats.ended
        event["realtime"] = {
            "kind": "session", "duration_s": round(duration, 3), "messages_in": stats.messages_in,
            "messages_out": stats.messages_out, "bytes_in": stats.bytes_in, "responses": stats.responses,
            "tokens_in": stats.tokens_in, "tokens_out": stats.tokens_out, "cached_tokens": stats.cached_tokens,
            "audio_tokens_in": stats.audio_tokens_in, "audio_tokens_out": stats.audio_tokens_out,
            "cost_usd": round(stats.cost_usd, 9), "ended": stats.ended, "close_code": stats.close_code}
        self._pipeline.finish(ctx, 502 if stats.ended == "upstream_refused" else 101)

    # -- client secrets ------------------------------------------------------------------------
    async def client_secret(self, request: Request, out: dict[str, str]) -> Response:
        """``POST /v1/realtime/client_secrets`` (routed by ``entry.py``)."""
        principal = await self._pipeline.access.authenticate(request)

        def check_model(principal: Principal, model: str) -> None:
            self._realtime_targets(self._pipeline.router.resolve(model), model)  # 404, 400
            self._pipeline.access.check_model(principal, model)  # 403

        return await self.secrets.mint(request, principal, check_model)
