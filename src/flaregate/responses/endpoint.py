"""``POST /v1/responses`` through the chat flow's own steps (``RequestSteps``).

Parse and validate, authenticate, rate limit, route, answer from the cache or call the
upstream with retries and failover (identical concurrent misses share one call), record one
analytics event: as chat (``caching.py`` says what a cached Responses answer is).
OpenAI-kind providers get the body unchanged (``/responses`` upstream); every other chat
provider is reached by translation (``translate.py``). ``previous_response_id`` is resolved
here when the gateway stored that response (``conversations.py``); an id it does not know
goes to the provider untouched, or is a 400 when no routed provider keeps conversations
itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from ..accounting import Usage
from ..cache.layer import CacheLayer
from ..errors import GatewayError, bad_request
from ..guardrails.checks import check_answer_texts, guard_typed_stream
from ..http import Request, Response
from ..observability.profiler import Profiler
from ..ports import BackgroundTasks, KeyValueStore, UpstreamError, UpstreamResponse
from ..providers.anthropic_translate import SseParser
from ..routing.upstream_call import PIN_HEADER
from ..steps import RequestSteps
from .caching import ResponsesRecorder, render_hit
from .conversations import Conversations
from .translate import HISTORY_KEY

RESPONSES_PATH = "/v1/responses"


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1, max_length=256)
    input: StrictStr | list[StrictStr | dict[str, Any]]
    instructions: StrictStr | None = None
    previous_response_id: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    max_output_tokens: int | None = Field(default=None, gt=0)
    tools: list[dict[str, Any]] | None = None
    stream: StrictBool = False
    store: StrictBool = True


def _error_event(message: str, code: str) -> bytes:
    data = {"type": "error", "code": code, "message": message, "param": None, "sequence_number": 0}
    return b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


class ResponsesEndpoint:
    def __init__(self, steps: RequestSteps, store: KeyValueStore, tasks: BackgroundTasks,
                 caching: CacheLayer) -> None:
        self.steps = steps
        self.conversations = Conversations(store)
        self._tasks = tasks
        self.caching = caching

    async def handle(self, request: Request, out: dict[str, str]) -> Response:
        steps = self.steps
        profiler = Profiler(steps.clock)
        event = steps.new_event(request, out, RESPONSES_PATH)
        try:
            response = await self._steps(request, out, profiler, event)
        except GatewayError as exc:
            event["error_code"] = exc.code
            exc.headers = {**out, **exc.headers}
            response = exc.to_response()
        except Exception:
            steps.finish(event, 500, profiler)
            raise
        steps.answered(event, response, profiler)  # a stream records its event when it ends
        response.headers["server-timing"] = profiler.server_timing()
        return response

    async def _steps(self, request: Request, out: dict[str, str], profiler: Profiler,
                     event: dict[str, Any]) -> Response:
        steps = self.steps
        with profiler.phase("parse"):
            body = steps.parse_body(request, ResponsesRequest)
            if isinstance(body["input"], list) and len(body["input"]) > steps.settings.security.max_messages:
                raise bad_request(f"Too many input items: {len(body['input'])} "
                                  f"(limit {steps.settings.security.max_messages}).", param="input",
                                  code="too_many_messages")
            event["model"] = body["model"]
            event["stream"] = stream = body.get("stream") is True
        with profiler.phase("auth"):
            principal = await steps.access.authenticate(request)
            steps.access.check_model(principal, body["model"])
            event["key_id"] = principal.key_id
            steps.tag(request, principal, event)
            guard = steps.guard_input(body, principal, event)
        with profiler.phase("route"):
            routed = steps.router.pick(body["model"], request.headers, body, event.get("tags") or {}, event)
            targets = steps.upstream.pinned(steps.router.resolve(routed), request.headers.get(PIN_HEADER))
        history: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous:
            found = await self.conversations.history(principal.key_id, previous)
            if found is not None:
                history = found
                body = {k: v for k, v in body.items() if k != "previous_response_id"}
                body[HISTORY_KEY] = history
            elif not any("responses" in getattr(t.provider, "operations", ()) for t in targets):
                raise GatewayError(404, f"Response '{previous[:64]}' is not known here (stored "
                                   "conversations expire after a day).", param="previous_response_id",
                                   code="previous_response_not_found")
        with profiler.phase("ratelimit"):
            estimate_body = {"messages": [body.get("instructions"), history, body["input"]],
                             "tools": body.get("tools"), "max_tokens": body.get("max_output_tokens")}
            admission = await steps.ratelimits.admit(request, principal, body["model"], estimate_body, out, event)
        with profiler.phase("cache"):
            plan = await self.caching.plan(request.headers, principal.key_id, body, targets, operation="responses",
                                           tags=event.get("tags"))
            hit = await self.caching.lookup(plan, render_hit)
        event["cache"] = plan.status
        if hit is not None:
            await admission.refund()  # nothing went upstream: the reserved tokens go back
            return self._guard_hit(self.caching.hit_response(plan, hit, out, event), guard, stream, event)
        forward = {"x-request-id": out["x-request-id"], "traceparent": out["traceparent"]}
        started = steps.clock.monotonic()
        try:
            target, upstream = await self.caching.fetch(
                plan, lambda: steps.upstream.call(targets, body, forward, event, operation="responses", stream=stream),
                event, ResponsesRecorder)
        except GatewayError as exc:
            await admission.refund()
            exc.headers.update({**self.caching.miss_headers(plan, None), **exc.headers})  # type: ignore[arg-type]
            raise
        event.update(provider=target.provider.name, upstream_model=target.model or body["model"],
                     upstream_status=upstream.status)
        headers = {**out, "x-flaregate-provider": target.provider.name, **self.caching.miss_headers(plan, upstream),
                   "x-flaregate-attempts": str(event.get("attempts", 0)),
                   "content-type": upstream.headers.get("content-type", "application/json")}
        keep = body.get("store") is not False
        if stream and upstream.status == 200:
            profiler.add("upstream_ttfb", (steps.clock.monotonic() - started) * 1000)
            headers["cache-control"] = "no-cache"
            admission.keep()  # usage is read from the final event only for the analytics
            relay = self._relay(upstream, profiler, event, principal.key_id, history,
                                body["input"] if keep else None)
            if guard is not None and steps.guardrails is not None:
                relay = guard_typed_stream(steps.guardrails, guard, relay, event)
            return Response(200, headers, relay)
        try:
            payload = await upstream.read()
        except UpstreamError as exc:
            await admission.refund()
            raise GatewayError(502, f"Upstream provider '{target.provider.name}' broke the connection: {exc}",
                               type="api_error", code="upstream_error") from None
        finally:
            await upstream.aclose()
            profiler.add("upstream", (steps.clock.monotonic() - started) * 1000)
        if upstream.status != 200:
            headers.update(await admission.refund())
            return steps.upstream_failure_response(upstream.status, upstream.headers, payload, headers)
        try:
            answer = json.loads(payload)
            usage = answer.get("usage") or {}
        except (ValueError, AttributeError):
            await admission.refund()
            raise GatewayError(502, f"Upstream provider '{target.provider.name}' returned malformed JSON.",
                               type="api_error", code="upstream_malformed_response") from None
        if guard is not None and steps.guardrails is not None:
            payload = check_answer_texts(steps.guardrails, guard, payload, event, "output")
            answer = json.loads(payload)
        if event.get("cache_collapsed"):  # another request's answer: nothing spent upstream
            headers.update(await admission.refund())
        else:
            headers.update(await admission.settle(self._usage(usage, event), target.provider.name, target.model))
        if keep:
            self._save(principal.key_id, answer, history, body["input"])
        self.caching.mark_stored(headers, upstream)
        return Response(200, headers, payload)

    def _guard_hit(self, response: Response, guard: Any, stream: bool, event: dict[str, Any]) -> Response:
        """A cached answer is stored as the provider gave it: the policy applies on every serve."""
        guardrails = self.steps.guardrails
        if guard is None or guardrails is None or not isinstance(response.body, bytes):
            return response
        if stream:
            response.body = guard_typed_stream(guardrails, guard, _once(response.body), event)
        else:
            response.body = check_answer_texts(guardrails, guard, response.body, event, "output")
        return response

    @staticmethod
    def _usage(usage: Any, event: dict[str, Any]) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        tokens_in, tokens_out = usage.get("input_tokens"), usage.get("output_tokens")
        event["tokens_in"], event["tokens_out"] = tokens_in, tokens_out
        if isinstance(tokens_in, int) and isinstance(tokens_out, int):
            return Usage(tokens_in, tokens_out)
        return None

    def _save(self, key_id: str, answer: Any, history: list[dict[str, Any]], request_input: Any) -> None:
        if isinstance(answer, dict) and isinstance(answer.get("id"), str):
            self._tasks.run(self.conversations.save(key_id, answer["id"][:200], history, request_input,
                                                    answer.get("output")))

    async def _relay(self, upstream: UpstreamResponse, profiler: Profiler, event: dict[str, Any], key_id: str,
                     history: list[dict[str, Any]], request_input: Any) -> AsyncIterator[bytes]:
        """Responses SSE out; the final ``response.completed`` is read for usage and storage."""
        started = self.steps.clock.monotonic()
        parser = SseParser()
        final: dict[str, Any] | None = None
        outcome = "complete"
        try:
            async for chunk in upstream.aiter_bytes():
                if not chunk:
                    continue
                for kind, data in parser.feed(chunk):
                    if kind in ("response.completed", "response.incomplete") or '"response.completed"' in data[:80]:
                        try:
                            final = json.loads(data).get("response")
                        except (ValueError, AttributeError):
                            final = None
                yield chunk
            if final is None:
                outcome = "truncated"
                yield _error_event("The upstream stream ended before completion.", "upstream_stream_truncated")
        except UpstreamError as exc:
            outcome = "interrupted"
            yield _error_event(f"The upstream stream was interrupted: {exc}", "upstream_stream_interrupted")
        finally:
            await upstream.aclose()
            profiler.add("upstream", (self.steps.clock.monotonic() - started) * 1000)
            event["stream_outcome"] = outcome
            if outcome != "complete":
                event["error"] = outcome
            if isinstance(final, dict):
                self._usage(final.get("usage"), event)
                if request_input is not None:
                    self._save(key_id, final, history, request_input)
            self.steps.finish(event, 200, profiler)
