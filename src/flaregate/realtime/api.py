"""``/v1/realtime``: what the gateway decides before a host upgrades the connection, and the
ephemeral client secrets.

Before the upgrade (:meth:`Realtime.open`), in the pipeline's order: the key (``Authorization:
Bearer``, the browser subprotocol ``openai-insecure-api-key.<key>``, or an ephemeral
``ek_`` secret used once), the route of ``?model=`` (unknown: 404; authorised against the
alias and the route it resolved to), a provider that speaks the Realtime API (kind
``openai``; any other: 400), the key's rate limits (one request unit: 429 with
``Retry-After``), a session slot (``REALTIME_MAX_SESSIONS_PER_KEY``: 429). Any refusal is
an HTTP answer, never a 101. The host then opens the provider's socket with the gateway's
own credential and runs the :class:`~.relay.Relay` between the two.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from ..errors import GatewayError, bad_request
from ..guardrails.checks import Guardrails
from ..http import Headers, Request, Response, json_response
from ..observability import tracing
from ..observability.analytics import Analytics
from ..ports import Clock, SecurityStoreClient
from ..providers.settings import ProviderConfig
from ..ratelimits.enforcer import Limits
from ..request_event import RequestEvent
from ..routes import Route
from ..routing.routes import Router, Target
from ..routing.upstream_call import UpstreamCaller
from ..security import limits as input_limits
from ..security.access import AccessControl, Principal, presented_token
from ..security.privacy import client_address
from . import events
from .metering import SessionMeter
from .relay import Relay, Socket
from .settings import RealtimeSettings

log = logging.getLogger("flaregate.realtime")

PATH = "/v1/realtime"
SECRETS_PATH = "/v1/realtime/client_secrets"
KEY_PROTOCOL = "openai-insecure-api-key."  # a browser cannot set headers on a WebSocket
SECRET_PREFIX = "ek_"
REALTIME_KINDS = frozenset({"openai"})


def offered_protocols(headers: Headers) -> list[str]:
    raw = ",".join(v for k, v in headers.items() if k.lower() == "sec-websocket-protocol")
    return [p.strip() for p in raw.split(",") if p.strip()]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class _MemorySlots:
    """Session slots in this process only: when no security store is reachable (an edge
    deployment without the SECURITY_STORE binding, the local host over Redis)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._held: dict[str, tuple[str, float]] = {}

    def call(self, op: str, args: dict[str, Any]) -> Any:
        now = self._clock.now()
        self._held = {s: v for s, v in self._held.items() if v[1] > now}
        if op == "realtime.slots.acquire":
            held = sum(1 for k, _ in self._held.values() if k == args["key_id"])
            if held >= args["limit"]:
                return {"allowed": False, "held": held, "limit": args["limit"], "retry_after_seconds": 1.0}
            self._held[args["session"]] = (args["key_id"], now + args["ttl"])
            return {"allowed": True, "held": held + 1, "limit": args["limit"]}
        if op == "realtime.slots.renew":
            if args["session"] in self._held:
                self._held[args["session"]] = (self._held[args["session"]][0], now + args["ttl"])
                return True
            return False
        if op == "realtime.slots.release":
            return self._held.pop(args["session"], None) is not None
        raise ValueError(op)


@dataclasses.dataclass
class Session:
    """An admitted session: where the host connects, and the relay it runs."""

    relay: Relay
    upstream_url: str  # ws:// or wss://
    upstream_headers: dict[str, str]
    subprotocol: str | None  # what the 101 selects (never the protocol carrying the key)
    provider: str
    upstream_model: str
    first_frames: list[str]  # sent upstream before any client frame (an ephemeral secret's session)
    _opened: Callable[[Session, bool, str], None]
    _heartbeat: asyncio.Task[None] | None = None

    def start(self, client: Socket, upstream: Socket) -> None:
        """The provider accepted: relay between the two sockets."""
        self._opened(self, True, "")
        for frame in self.first_frames:
            upstream.send(frame)
        self.relay.start(client, upstream)

    def refused(self, message: str) -> None:
        """The provider refused or could not be reached: counted against its health; the
        host answers the client (an HTTP 502 before the upgrade)."""
        self._opened(self, False, message)


class Realtime:
    def __init__(self, settings: Any, clock: Clock, access: AccessControl, router: Router, limits: Limits,
                 analytics: Analytics, upstream: UpstreamCaller, guardrails: Guardrails | None,
                 security: SecurityStoreClient | None) -> None:
        self.settings: RealtimeSettings = settings.realtime
        self._all = settings
        self._clock = clock
        self._access = access
        self._router = router
        self._limits = limits
        self._analytics = analytics
        self._upstream = upstream
        self._guardrails = guardrails
        self._security = security
        self._memory_slots = _MemorySlots(clock)
        self._providers: dict[str, ProviderConfig] = {p.name: p for p in settings.providers}
        self.open_sessions = 0

    def routes(self) -> list[Route]:
        return [
            # Upgraded by the hosts before the table is consulted; a plain GET gets the 426.
            Route(PATH, {"GET": self._without_upgrade}, "key", "Realtime API session (WebSocket)"),
            Route(SECRETS_PATH, {"POST": self._client_secret}, "key",
                  "A short-lived, single-use Realtime client secret for a browser"),
        ]

    # -- before the upgrade ----------------------------------------------------------------
    async def open(self, request: Request) -> Session:
        """Admit a session or raise GatewayError (the host answers it before any upgrade)."""
        out = {"x-request-id": tracing.request_id(request.headers.get("x-request-id")),
               "traceparent": tracing.child_traceparent(request.headers.get("traceparent"))}
        event: RequestEvent = {
            "ts": self._clock.now(), "request_id": out["x-request-id"], "trace_id": tracing.trace_id(out["traceparent"]),
            "span_id": tracing.span_id(out["traceparent"]), "path": PATH, "status": 0, "model": None, "provider": None,
            "cache": None, "stream": True,
            "client": client_address(request.client_ip, self._all.security.anonymize_ips)}
        started = self._clock.monotonic()
        try:
            return await self._admit(request, out, event, started)
        except GatewayError as exc:
            exc.headers = {**out, **exc.headers}
            event["status"], event["error_code"] = exc.status, exc.code
            event["latency_ms"] = round((self._clock.monotonic() - started) * 1000, 3)
            self._analytics.record(event)
            raise

    async def _admit(self, request: Request, out: dict[str, str], event: RequestEvent, started: float) -> Session:
        input_limits.check_headers(request.headers, self._all.security)  # 431, as every request (security/gate.py)
        offered = offered_protocols(request.headers)
        token = presented_token(request)
        if token is None:
            token = next((p[len(KEY_PROTOCOL):] for p in offered if p.startswith(KEY_PROTOCOL)), None)
        model = request.query.get("model") or ""
        first_frames: list[str] = []
        if token is not None and token.startswith(SECRET_PREFIX):
            principal, model, first_frames = await self._redeem(token, model)
        else:
            authed = request if token is None or presented_token(request) else dataclasses.replace(
                request, headers=Headers([*request.headers.items(), ("authorization", f"Bearer {token}")]))
            principal = await self._access.authenticate(authed)
        if not model:
            raise bad_request("A Realtime session needs ?model=<alias>.", param="model", code="missing_model")
        routed = self._router.pick(model, request.headers, {"model": model}, {}, event)
        targets = self._router.resolve(routed)
        self._access.check_model(principal, model)
        if routed != model:
            self._access.check_model(principal, routed)
            event["route"] = routed
        event["key_id"], event["model"] = principal.key_id, model
        target = self._realtime_target(targets, model)
        config = self._providers[target.provider.name]
        admission = await self._limits.admit(request, principal, routed, {"messages": None, "max_tokens": 1}, out, event)
        await admission.refund()  # the session keeps its request unit; its responses reserve their own tokens
        session_id = out["x-request-id"]
        await self._take_slot(principal, session_id)
        policy = (self._guardrails.policy_for(routed, principal.key_id, principal.name)
                  if self._guardrails is not None else None)
        meter = SessionMeter(self._limits, self._analytics, request, principal, routed, target.provider.name,
                             target.model, event, self._guardrails, policy)
        event["provider"], event["upstream_model"] = target.provider.name, target.model
        relay = Relay(self.settings, self._clock, meter, policy is not None,
                      lambda r: self._finished(r, event, principal, session_id, started))
        url, headers = self._upstream_endpoint(config, target.model, out)
        chosen = "realtime" if "realtime" in offered else None
        session = Session(relay, url, headers, chosen, target.provider.name, target.model, first_frames, self._opened)
        session._heartbeat = asyncio.ensure_future(self._heartbeat(principal.key_id, session_id, relay))
        self.open_sessions += 1
        return session

    def _realtime_target(self, targets: list[Target], model: str) -> Target:
        for target in targets:
            config = self._providers.get(target.provider.name)
            if config is not None and config.kind in REALTIME_KINDS:
                return target
        kinds = sorted({self._providers[t.provider.name].kind for t in targets if t.provider.name in self._providers})
        raise bad_request(f"The model '{model}' is routed to a provider that does not speak the Realtime API "
                          f"({', '.join(kinds) or 'none'}); route it to an OpenAI provider.", param="model",
                          code="realtime_not_supported")

    def _upstream_endpoint(self, config: ProviderConfig, model: str, out: dict[str, str]) -> tuple[str, dict[str, str]]:
        base = (config.base_url or "").rstrip("/")
        ws_base = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
        headers = {"x-request-id": out["x-request-id"]}
        key = config.api_key.get_secret_value() if config.api_key is not None else None
        version = self.settings.azure_api_versions.get(config.name)
        if version is not None:  # Azure OpenAI: /openai/realtime?api-version=..&deployment=.., an api-key header
            split = urlsplit(ws_base)
            url = (f"{split.scheme}://{split.netloc}/openai/realtime?api-version={quote(version)}"
                   f"&deployment={quote(model)}")
            if key:
                headers["api-key"] = key
            return url, headers
        if key:
            headers["authorization"] = f"Bearer {key}"
        return f"{ws_base}/realtime?model={quote(model)}", headers

    async def _redeem(self, token: str, model: str) -> tuple[Principal, str, list[str]]:
        """An ephemeral secret: used once (deleted as it is read), its key still usable."""
        record = await self._store("realtime.secrets.take", {"digest": _digest(token)})
        if not isinstance(record, dict):
            raise GatewayError(401, "This client secret is unknown, expired or already used.",
                               type="authentication_error", code="invalid_client_secret")
        principal = await self._access.principal_by_id(str(record.get("key_id")), PATH)
        if principal is None:
            raise GatewayError(401, "The key this client secret was made for can no longer be used.",
                               type="authentication_error", code="invalid_client_secret")
        bound = str(record.get("model") or "")
        if model and model != bound:
            raise GatewayError(403, f"This client secret is for the model '{bound}'.", type="permission_error",
                               code="model_not_allowed", param="model")
        session = record.get("session")
        frames = [events.session_update(session)] if isinstance(session, dict) and len(session) > 1 else []
        return principal, bound, frames

    async def _store(self, op: str, args: dict[str, Any]) -> Any:
        if self._security is None:
            raise GatewayError(503, "Realtime client secrets need the security store, which is not configured.",
                               type="api_error", code="secret_store_unavailable")
        try:
            return await self._security.call(op, args)
        except ValueError:  # a store without the Realtime operations (Redis)
            raise GatewayError(503, "This gateway's key store keeps no Realtime client secrets.",
                               type="api_error", code="secret_store_unavailable") from None

    async def _slots(self, op: str, args: dict[str, Any]) -> Any:
        if self._security is not None:
            try:
                return await self._security.call(op, args)
            except ValueError:  # a store without the Realtime operations: this process's own
                pass
        return self._memory_slots.call(op, args)

    async def _take_slot(self, principal: Principal, session_id: str) -> None:
        answer = await self._slots("realtime.slots.acquire", {
            "key_id": principal.key_id, "session": session_id, "limit": self.settings.max_sessions_per_key,
            "ttl": self.settings.slot_ttl_seconds})
        if not isinstance(answer, dict) or not answer.get("allowed"):
            wait = int(max(1.0, float((answer or {}).get("retry_after_seconds", 1.0))))
            raise GatewayError(429, f"This key already has {self.settings.max_sessions_per_key} Realtime sessions "
                               "open; close one first.", type="rate_limit_error", code="too_many_sessions",
                               headers={"retry-after": str(wait)})

    async def _heartbeat(self, key_id: str, session_id: str, relay: Relay) -> None:
        """Renew the session's slot every third of its TTL while the session lasts."""
        every = self.settings.slot_ttl_seconds / 3
        while not relay.ended:
            try:
                await asyncio.wait_for(relay.done.wait(), every)
                return
            except TimeoutError:
                pass
            try:
                await self._slots("realtime.slots.renew", {"key_id": key_id, "session": session_id,
                                                           "ttl": self.settings.slot_ttl_seconds})
            except Exception:  # the store away for a beat: the slot lapses at worst
                log.warning("could not renew a realtime session slot", exc_info=True)

    def _opened(self, session: Session, ok: bool, message: str) -> None:
        health = self._upstream.health.get(session.provider, session.upstream_model)
        if ok:
            self._upstream.health.success(health)
        else:
            self._upstream.health.failure(health, "connect", message[:200])
            session.relay.end("upstream_refused", events.UPSTREAM_ERROR, "provider refused", client_gone=True)

    async def _finished(self, relay: Relay, event: RequestEvent, principal: Principal, session_id: str,
                        started: float) -> None:
        """The session's one request-log record, its slot given back, a drop counted."""
        self.open_sessions -= 1
        stats = relay.stats
        if stats.ended == "upstream_dropped":
            health = self._upstream.health.get(str(event.get("provider")), str(event.get("upstream_model")))
            self._upstream.health.failure(health, "disconnect", "the provider dropped a Realtime session")
        try:
            await self._slots("realtime.slots.release", {"key_id": principal.key_id, "session": session_id})
        except Exception:
            log.warning("could not release a realtime session slot (it lapses with its TTL)", exc_info=True)
        duration = self._clock.monotonic() - started
        event["status"] = 502 if stats.ended == "upstream_refused" else 101
        event["latency_ms"] = round(duration * 1000, 3)
        event["upstream_ms"] = event["latency_ms"]  # a session's time is the provider's, not overhead
        clean = stats.ended in ("client_closed", "upstream_closed")
        event["stream_outcome"] = "complete" if clean else stats.ended
        if not clean:
            event["error"] = stats.ended
        event["realtime"] = {
            "kind": "session", "duration_s": round(duration, 3), "messages_in": stats.messages_in,
            "messages_out": stats.messages_out, "bytes_in": stats.bytes_in, "responses": stats.responses,
            "tokens_in": stats.tokens_in, "tokens_out": stats.tokens_out, "cached_tokens": stats.cached_tokens,
            "audio_tokens_in": stats.audio_tokens_in, "audio_tokens_out": stats.audio_tokens_out,
            "cost_usd": round(stats.cost_usd, 9), "ended": stats.ended, "close_code": stats.close_code}
        self._analytics.record(event)

    # -- routes --------------------------------------------------------------------------------
    async def _without_upgrade(self, request: Request, out: dict[str, str]) -> Response:
        await self._access.authenticate(request)
        raise GatewayError(426, "GET /v1/realtime needs a WebSocket upgrade ('Upgrade: websocket').",
                           code="upgrade_required", headers={"upgrade": "websocket"})

    async def _client_secret(self, request: Request, out: dict[str, str]) -> Response:
        """``POST /v1/realtime/client_secrets`` as OpenAI's: ``{"expires_after": {"anchor":
        "created_at", "seconds": N}, "session": {"type": "realtime", "model": ...}}`` ->
        ``{"value": "ek_...", "expires_at": ..., "session": {...}}``, bound to the calling
        key, the model and the session config; usable once."""
        principal = await self._access.authenticate(request)
        body = input_limits.parse_json(request.body or b"{}", self._all.security.max_json_depth)
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.", code="invalid_json")
        session = body.get("session") if body.get("session") is not None else {}
        expires = body.get("expires_after") if body.get("expires_after") is not None else {}
        if not isinstance(session, dict) or not isinstance(expires, dict):
            raise bad_request("'session' and 'expires_after' must be objects.", code="invalid_request")
        model = session.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("session.model is required: the secret is bound to one model.", param="session.model",
                              code="missing_model")
        seconds = expires.get("seconds", self.settings.client_secret_seconds)
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 10 <= seconds <= 7200:
            raise bad_request("expires_after.seconds must be an integer from 10 to 7200.",
                              param="expires_after.seconds", code="invalid_expiry")
        seconds = min(seconds, self.settings.client_secret_seconds)
        targets = self._router.resolve(model)  # unknown model: 404 now, not at the browser's connect
        self._access.check_model(principal, model)
        self._realtime_target(targets, model)
        value = SECRET_PREFIX + secrets.token_urlsafe(24)
        now = self._clock.now()
        expires_at = int(now + seconds)
        await self._store("realtime.secrets.put", {"digest": _digest(value), "expires_at": float(expires_at),
                                                   "record": {"key_id": principal.key_id, "model": model,
                                                              "session": session}})
        return json_response({"value": value, "expires_at": expires_at,
                              "session": {"type": "realtime", "object": "realtime.session", **session}})
