"""``POST /v1/embeddings`` and ``POST /v1/messages`` through the chat flow's own steps.

Both parse and validate, authenticate, rate limit, route and call the upstream with
retries and failover (``UpstreamCaller``), and record one analytics event, reusing the
gateway's steps. Only the targets whose provider offers the operation are tried:
embeddings go to OpenAI-compatible and mock providers; messages (Anthropic's native API)
pass through unchanged to ``anthropic`` providers and are translated for every other chat
provider (``providers/messages_over_chat.py``). Errors on ``/v1/messages`` are
Anthropic-shaped (``{"type": "error", "error": {"type", "message"}}``) so Anthropic SDKs
read them; stream breaks end with an Anthropic ``error`` event. Guardrails check both
requests' input and a message's answer texts (whole, or one stream event at a time).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from .accounting import Usage
from .errors import GatewayError
from .guardrails.checks import anthropic_error_event, check_answer_texts, guard_typed_stream
from .http import Headers, Request, Response, json_response
from .observability.profiler import Profiler
from .ports import UpstreamError, UpstreamResponse
from .routing.upstream_call import PIN_HEADER
from .security.access import Principal
from .steps import RequestSteps

EMBEDDINGS_PATH = "/v1/embeddings"
MESSAGES_PATH = "/v1/messages"
_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                     404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1, max_length=256)
    input: StrictStr | list[Any] = Field(min_length=1)


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int = Field(gt=0)
    stream: StrictBool = False


def anthropic_error(exc: GatewayError) -> Response:
    kind = _ANTHROPIC_ERRORS.get(exc.status, "api_error")
    return json_response({"type": "error", "error": {"type": kind, "message": exc.message}}, exc.status, exc.headers)


def _anthropic_error_event(message: str) -> bytes:
    error = {"type": "error", "error": {"type": "api_error", "message": message}}
    return b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n"


class UpstreamEndpoints:
    def __init__(self, steps: RequestSteps) -> None:
        self.steps = steps

    async def embeddings(self, request: Request, out: dict[str, str]) -> Response:
        return await self._run(request, out, EMBEDDINGS_PATH, "embeddings")

    async def messages(self, request: Request, out: dict[str, str]) -> Response:
        return await self._run(request, out, MESSAGES_PATH, "messages")

    async def _run(self, request: Request, out: dict[str, str], path: str, operation: str) -> Response:
        steps = self.steps
        profiler = Profiler(steps.clock)
        event = steps.new_event(request, out, path)
        try:
            response = await self._steps(request, out, profiler, event, operation)
        except GatewayError as exc:
            exc.headers = {**out, **exc.headers}
            response = anthropic_error(exc) if operation == "messages" else exc.to_response()
        except Exception:
            steps.finish(event, 500, profiler)
            raise
        steps.answered(event, response, profiler)  # a stream records its event when it ends
        response.headers["server-timing"] = profiler.server_timing()
        return response

    async def _authorize(self, request: Request, operation: str, model: str) -> Principal:
        # Anthropic SDKs send their key as x-api-key; accept the gateway key there too.
        api_key = (request.headers.get("x-api-key") or "").strip()
        if operation == "messages" and api_key and "authorization" not in request.headers:
            headers = Headers([*request.headers.items(), ("authorization", f"Bearer {api_key}")])
            request = dataclasses.replace(request, headers=headers)
        principal = await self.steps.access.authenticate(request)
        self.steps.access.check_model(principal, model)
        return principal

    async def _steps(self, request: Request, out: dict[str, str], profiler: Profiler, event: dict[str, Any],
                     operation: str) -> Response:
        steps = self.steps
        with profiler.phase("parse"):
            schema = MessagesRequest if operation == "messages" else EmbeddingsRequest
            body = steps.parse_body(request, schema)
            event["model"] = body["model"]
            event["stream"] = stream = body.get("stream") is True
        with profiler.phase("auth"):
            principal = await self._authorize(request, operation, body["model"])
            event["key_id"] = principal.key_id
            steps.tag(request, principal, event)
            guard = steps.guard_input(body, principal, event)
            if operation != "messages" or steps.guardrails is None:
                guard = None  # embeddings have no answer text to check
        with profiler.phase("route"):  # before the limits: an unrouted model costs nothing
            routed = steps.router.pick(body["model"], request.headers, body, event.get("tags") or {}, event)
            targets = steps.upstream.pinned(steps.router.resolve(routed), request.headers.get(PIN_HEADER))
        with profiler.phase("ratelimit"):
            admission = await steps.ratelimits.admit(request, principal, body["model"], body, out, event)
        # The gateway's own span (the one it answers with and exports) is the provider call's parent.
        forward = {"x-request-id": out["x-request-id"], "traceparent": out["traceparent"]}
        if operation == "messages" and request.headers.get("anthropic-beta"):
            forward["anthropic-beta"] = request.headers["anthropic-beta"]
        started = steps.clock.monotonic()
        try:
            target, upstream = await steps.upstream.call(targets, body, forward, event, operation=operation,
                                                      stream=stream)
        except GatewayError:
            await admission.refund()  # nothing was answered: the reservation goes back
            raise
        event["provider"] = target.provider.name
        headers = {**out, "x-flaregate-provider": target.provider.name, "x-flaregate-attempts": str(event["attempts"]),
                   "content-type": upstream.headers.get("content-type", "application/json")}
        if stream and upstream.status == 200:
            profiler.add("upstream_first_byte", (steps.clock.monotonic() - started) * 1000)
            headers["cache-control"] = "no-cache"
            admission.keep()  # a passed-through stream's usage is not read: the estimate stands
            relay = self._relay(upstream, profiler, event)
            if guard is not None and steps.guardrails is not None:
                relay = guard_typed_stream(steps.guardrails, guard, relay, event, anthropic_error_event)
            return Response(200, headers, relay)
        with profiler.phase("upstream"):
            payload = await upstream.read()
            await upstream.aclose()
        if upstream.status != 200:
            headers.update(await admission.refund())
            response = steps.upstream_failure_response(upstream.status, upstream.headers, payload, headers)
            if operation == "messages" and isinstance(response.body, bytes):
                error = json.loads(response.body)["error"]
                response = anthropic_error(GatewayError(response.status, error["message"], headers=response.headers))
            return response
        usage = json.loads(payload).get("usage") or {}
        if isinstance(usage, dict):
            event["tokens_in"] = usage.get("input_tokens", usage.get("prompt_tokens"))
            event["tokens_out"] = usage.get("output_tokens", usage.get("completion_tokens"))
        real = Usage(event["tokens_in"], event["tokens_out"] or 0) if isinstance(event.get("tokens_in"), int) else None
        headers.update(await admission.settle(real, target.provider.name, target.model))
        if guard is not None and steps.guardrails is not None:
            payload = check_answer_texts(steps.guardrails, guard, payload, event, "content")
        return Response(200, headers, payload)

    async def _relay(self, upstream: UpstreamResponse, profiler: Profiler, event: dict[str, Any]) -> AsyncIterator[bytes]:
        """Anthropic SSE, passed through; a break ends with an explicit ``error`` event."""
        started = self.steps.clock.monotonic()
        tail = b""
        outcome = "complete"
        try:
            async for chunk in upstream.aiter_bytes():
                if chunk:
                    tail = (tail + chunk)[-256:]
                    yield chunk
            if b"message_stop" not in tail:
                outcome = "truncated"
                yield _anthropic_error_event("The upstream stream ended before completion.")
        except UpstreamError as exc:
            outcome = "interrupted"
            yield _anthropic_error_event(f"The upstream stream was interrupted: {exc}")
        finally:
            await upstream.aclose()
            profiler.add("upstream", (self.steps.clock.monotonic() - started) * 1000)
            event["stream_outcome"] = outcome
            if outcome != "complete":
                event["error"] = outcome
            self.steps.finish(event, 200, profiler)
