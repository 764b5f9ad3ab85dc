"""``POST /v1/chat/completions``: the OpenAI chat completion, streamed or not, cached."""

from __future__ import annotations

from typing import Any

from ..guardrails.checks import Guardrails, guard_chat_stream
from ..http import Response
from ..pipeline.context import RequestContext
from ..pipeline.spec import CacheSpec, OperationSpec
from ..providers.base import CHAT
from ..request_event import RequestEvent
from ..schemas import ChatCompletionRequest
from .sse import ChatStream

PATH = "/v1/chat/completions"


def _guard_payload(guardrails: Guardrails, policy: Any, payload: bytes, event: RequestEvent) -> bytes:
    return guardrails.check_chat_answer(policy, payload, event)


def _guard_response(guardrails: Guardrails, policy: Any, response: Response, event: RequestEvent) -> Response:
    """A chat answer (whole or replayed, or its stream one event at a time) through the policy."""
    if isinstance(response.body, bytes):
        response.body = guardrails.check_chat_answer(policy, response.body, event)
        response.headers.pop("content-length", None)
    else:
        response.body = guard_chat_stream(guardrails, policy, response.body, event)
    return response


def _watch(ctx: RequestContext) -> ChatStream:
    assert ctx.admission is not None
    return ChatStream(ctx.admission.needs_usage)


SPEC = OperationSpec(
    name="chat", path=PATH, body_model=ChatCompletionRequest, operation=CHAT,
    summary="OpenAI chat completion (SSE with stream: true)",
    watch=_watch, cache=CacheSpec("chat"), predictive=True,
    example={"model": "mock-1", "messages": [{"role": "user", "content": "Hello"}]},
    # A streamed miss is guarded as a Response (event by event); a whole one as its payload.
    guard_payload=_guard_payload, guard_response=_guard_response,
)
