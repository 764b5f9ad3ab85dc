"""The steps every API endpoint shares, given to each endpoint instead of the whole Gateway.

Chat (``gateway.py``) and the endpoints routed like it (``endpoints.py``: embeddings and
Anthropic messages) parse the same way, reach the same access control, router, upstream
caller and limits, relay a provider's error the same way and record one analytics event
per request. Holding these here keeps ``endpoints`` from importing ``gateway``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from .config import Settings
from .errors import GatewayError, bad_request, upstream_error
from .guardrails.checks import Guardrails, guard_chat_stream
from .http import Request, Response
from .metadata.tags import request_tags
from .observability import tracing
from .observability.alerts import Alerts
from .observability.analytics import Analytics
from .observability.profiler import Profiler
from .observability.request_bodies import BodyLog
from .ports import Clock
from .ratelimits.enforcer import Limits
from .redaction import redact
from .routing.routes import Router
from .routing.upstream_call import UpstreamCaller
from .schemas import ChatCompletionRequest, validation_error
from .security import limits
from .security.access import AccessControl, Principal
from .security.privacy import client_address

_MAX_ERROR_BODY = 4096


@dataclass
class RequestSteps:
    settings: Settings
    clock: Clock
    access: AccessControl
    router: Router
    upstream: UpstreamCaller
    ratelimits: Limits
    analytics: Analytics
    alerts: Alerts
    upstream_secrets: list[str]
    guardrails: Guardrails | None = None
    bodies: BodyLog | None = None  # LOG_BODIES: None when off

    def __post_init__(self) -> None:
        logs = self.settings.request_logs
        if self.bodies is None and logs.bodies != "off":
            self.bodies = BodyLog(logs.bodies, logs.body_max_bytes, logs.private_routes)

    def guard_input(self, body: dict[str, Any], principal: Principal, event: dict[str, Any]) -> Any:
        """The route's or key's guardrail policy applied to ``body`` (redacted in place, so
        before the cache key; a block is a 400); returns the policy for the answer."""
        if self.guardrails is None:
            policy = None
        else:
            policy = self.guardrails.policy_for(body.get("model"), principal.key_id, principal.name)
            self.guardrails.check_input(policy, body, event)
        if self.bodies is not None:  # after the guardrails' redactions
            self.bodies.keep_request(body, event, principal.policy.private is True)
        return policy

    def guard_output(self, policy: Any, response: Response, event: dict[str, Any]) -> Response:
        """A chat answer (whole, or its stream one event at a time) through the policy."""
        if self.guardrails is None or policy is None or response.status != 200:
            return response
        if isinstance(response.body, bytes):
            response.body = self.guardrails.check_chat_answer(policy, response.body, event)
            response.headers.pop("content-length", None)
        else:
            response.body = guard_chat_stream(self.guardrails, policy, response.body, event)
        return response

    def new_event(self, request: Request, out: dict[str, str], path: str) -> dict[str, Any]:
        """The request's analytics event as every endpoint starts it (completed by :meth:`finish`)."""
        return {"ts": self.clock.now(), "request_id": out["x-request-id"],
                "trace_id": tracing.trace_id(out["traceparent"]), "span_id": tracing.span_id(out["traceparent"]),
                "parent_span_id": tracing.span_id(request.headers.get("traceparent")), "path": path, "status": 0, "model": None,
                "provider": None, "cache": None, "stream": False,
                "client": client_address(request.client_ip, self.settings.security.anonymize_ips)}

    def parse_body(self, request: Request, schema: type[BaseModel] = ChatCompletionRequest) -> dict[str, Any]:
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise GatewayError(415, "Content-Type must be application/json.", code="unsupported_media_type")
        if len(request.body) > self.settings.max_body_bytes:
            raise GatewayError(413, f"Request body exceeds {self.settings.max_body_bytes} bytes.",
                               code="request_too_large")
        body = limits.parse_json(request.body, self.settings.security.max_json_depth)
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.", code="invalid_json")
        try:
            schema.model_validate(body)
        except ValidationError as exc:
            raise validation_error(exc) from None
        limits.check_chat(body, self.settings.security)
        return body

    def tag(self, request: Request, principal: Principal, event: dict[str, Any]) -> dict[str, str]:
        """The request's tags (its key's defaults, then ``x-flaregate-metadata``) into the
        analytics event as ``tags``; a malformed header is a 400."""
        tags = request_tags(request.headers, principal.policy.tags)
        if tags:
            event["tags"] = tags
            # Only allow-listed tags become /metrics labels: their values are the operator's.
            labelled = {k: v for k, v in tags.items() if k in self.settings.metrics_tag_labels}
            if labelled:
                event["metric_tags"] = labelled
        return tags

    def answered(self, event: dict[str, Any], response: Response, profiler: Profiler) -> None:
        """The endpoint has its answer: a whole one finishes the event now, a stream when
        it ends (its body is watched for the request log if LOG_BODIES asks)."""
        if self.bodies is not None:
            self.bodies.keep_response(event, response)
        if not response.is_stream:
            self.finish(event, response.status, profiler)

    def finish(self, event: dict[str, Any], status: int, profiler: Profiler) -> None:
        """Complete the request's analytics event and hand it to the hub's batch."""
        if self.bodies is not None:
            self.bodies.finish(event)
        event["status"] = status
        event["latency_ms"] = round(profiler.elapsed_ms(), 3)
        event["phases"] = profiler.snapshot()
        if "upstream" in event["phases"]:
            event["upstream_ms"] = event["phases"]["upstream"]
        self.analytics.record(event)
        self.alerts.request_finished(status)

    def upstream_failure_response(self, status: int, upstream_headers: Any, payload: bytes,
                                  headers: dict[str, str]) -> Response:
        """Relay a provider's error honestly, as OpenAI error JSON, never its 5xx as ours."""
        try:
            parsed = json.loads(payload[:_MAX_ERROR_BODY])
            error = parsed.get("error") if isinstance(parsed, dict) else None
            message = (error.get("message") if isinstance(error, dict) else None) or str(error or "")
        except ValueError:
            message = ""
        provider = headers.get("x-flaregate-provider", "upstream")
        message = redact(message[:500], self.upstream_secrets)  # providers may echo a key
        message = f"Upstream provider '{provider}' answered {status}" + (f": {message}" if message else ".")
        if status >= 500:
            exc = upstream_error(502, message)
        elif status == 429:
            exc = GatewayError(429, message, type="rate_limit_error", code="upstream_rate_limited")
            # Retry-After on every 429: the provider's when it sent one, else a short wait.
            exc.headers["retry-after"] = upstream_headers.get("retry-after") or "1"
        else:
            exc = GatewayError(status, message, type="invalid_request_error", code="upstream_rejected")
        response = exc.to_response()
        response.headers = {**headers, **response.headers}
        return response
