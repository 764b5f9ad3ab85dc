"""``POST /v1/responses``: OpenAI's Responses API, cached like chat (``responses/caching.py``
says what a cached Responses answer is). OpenAI-kind providers get the body unchanged; every
other chat provider is reached by translation (``providers/responses_over_chat.py``).
``previous_response_id`` is resolved here when the gateway stored that response
(``responses/conversations.py``); an id it does not know goes to the provider untouched, or
is a 404 when no routed provider keeps conversations itself."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from ..accounting import Usage
from ..config import Settings
from ..errors import GatewayError, bad_request
from ..guardrails.checks import Guardrails, check_answer_texts, guard_typed_stream
from ..http import Response
from ..pipeline.context import RequestContext
from ..pipeline.spec import CacheSpec, OperationSpec, once
from ..ports import BackgroundTasks
from ..providers.anthropic_translate import SseParser
from ..providers.base import RESPONSES
from ..providers.responses_over_chat import HISTORY_KEY
from ..request_event import RequestEvent
from ..responses.caching import ResponsesRecorder, render_hit
from ..responses.conversations import Conversations

PATH = "/v1/responses"


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


class ResponsesStream:
    """Responses SSE: the final ``response.completed`` (or ``.incomplete``) is read for the
    usage and for the stored conversation; a break is an ``error`` event."""

    def __init__(self) -> None:
        self._parser = SseParser()
        self.final: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        for kind, data in self._parser.feed(chunk):
            if kind in ("response.completed", "response.incomplete") or '"response.completed"' in data[:80]:
                try:
                    final = json.loads(data).get("response")
                except (ValueError, AttributeError):
                    final = None
                self.final = final if isinstance(final, dict) else None

    def complete(self) -> bool:
        return self.final is not None

    def usage(self) -> Usage | None:
        usage = self.final.get("usage") if self.final is not None else None
        if isinstance(usage, dict) and isinstance(usage.get("input_tokens"), int) \
                and isinstance(usage.get("output_tokens"), int):
            return Usage(usage["input_tokens"], usage["output_tokens"])
        return None

    def error_event(self, message: str, code: str) -> bytes:
        data = {"type": "error", "code": code, "message": message, "param": None, "sequence_number": 0}
        return b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"


def _check(body: dict[str, Any], settings: Settings) -> None:
    if HISTORY_KEY in body:  # the gateway's own field: a client may not plant turns past the checks
        raise bad_request(f"Unknown parameter: '{HISTORY_KEY}'.", param=HISTORY_KEY, code="unknown_parameter")
    limit = settings.security.max_messages
    if isinstance(body["input"], list) and len(body["input"]) > limit:
        raise bad_request(f"Too many input items: {len(body['input'])} (limit {limit}).", param="input",
                          code="too_many_messages")


def _estimate(ctx: RequestContext) -> dict[str, Any]:
    body = ctx.body
    return {"messages": [body.get("instructions"), ctx.history, body["input"]], "tools": body.get("tools"),
            "max_tokens": body.get("max_output_tokens")}


def _guard_payload(guardrails: Guardrails, policy: Any, payload: bytes, event: RequestEvent) -> bytes:
    return check_answer_texts(guardrails, policy, payload, event, "output")


def _guard_response(guardrails: Guardrails, policy: Any, response: Response, event: RequestEvent) -> Response:
    if isinstance(response.body, bytes) and not (response.headers.get("content-type") or "").startswith(
            "text/event-stream"):
        response.body = check_answer_texts(guardrails, policy, response.body, event, "output")
    else:
        chunks = once(response.body) if isinstance(response.body, bytes) else response.body
        response.body = guard_typed_stream(guardrails, policy, chunks, event)
    return response


def _watch(ctx: RequestContext) -> ResponsesStream:
    return ResponsesStream()


def responses_spec(conversations: Conversations, tasks: BackgroundTasks) -> OperationSpec:
    """The Responses operation over this gateway's conversation store."""

    async def prepare(ctx: RequestContext) -> None:
        previous = ctx.body.get("previous_response_id")
        if not previous:
            return
        found = await conversations.history(ctx.tenant, previous)
        if found is not None:
            ctx.history = found
            ctx.body = {k: v for k, v in ctx.body.items() if k != "previous_response_id"}
            ctx.body[HISTORY_KEY] = found
        elif not any(RESPONSES in getattr(t.provider, "operations", ()) for t in ctx.targets or ()):
            raise GatewayError(404, f"Response '{previous[:64]}' is not known here (stored "
                               "conversations expire after a day).", param="previous_response_id",
                               code="previous_response_not_found")

    def save(ctx: RequestContext, answer: Any) -> None:
        if ctx.body.get("store") is False or not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            return
        tasks.run(conversations.save(ctx.tenant, answer["id"][:200], ctx.history, ctx.body["input"],
                                     answer.get("output")))

    def streamed(ctx: RequestContext, watch: Any) -> None:
        if isinstance(watch, ResponsesStream) and watch.final is not None:
            save(ctx, watch.final)

    return OperationSpec(
        name="responses", path=PATH, body_model=ResponsesRequest, operation=RESPONSES,
        summary="OpenAI Responses API (stored conversations, SSE with stream: true)",
        watch=_watch, cache=CacheSpec("responses", render_hit, ResponsesRecorder),
        example={"model": "mock-1", "input": "Hello"},
        check=_check, estimate=_estimate, prepare=prepare, answered=save, streamed=streamed,
        guard_payload=_guard_payload, guard_response=_guard_response,
    )
