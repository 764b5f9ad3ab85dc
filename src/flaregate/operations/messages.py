"""``POST /v1/messages``: Anthropic's Messages API, passed through to ``anthropic`` targets and
translated for every other chat provider (``providers/messages_over_chat.py``). Its errors
are Anthropic-shaped (``{"type": "error", "error": {"type", "message"}}``) so Anthropic SDKs
read them; a broken stream ends with an Anthropic ``error`` event."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from ..errors import GatewayError
from ..guardrails.checks import (
    Guardrails,
    anthropic_error_event,
    check_answer_texts,
    guard_typed_stream,
)
from ..http import Request, Response, json_response
from ..pipeline.context import RequestContext
from ..pipeline.runner import with_bearer
from ..pipeline.spec import OperationSpec, once
from ..providers.base import MESSAGES
from ..request_event import RequestEvent
from .sse import AnthropicStream

PATH = "/v1/messages"
_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                     404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
                     529: "overloaded_error"}


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int = Field(gt=0)
    stream: StrictBool = False


def anthropic_error(exc: GatewayError) -> Response:
    kind = _ANTHROPIC_ERRORS.get(exc.status, "api_error")
    return json_response({"type": "error", "error": {"type": kind, "message": exc.message}}, exc.status, exc.headers)


def _credentials(request: Request) -> Request:
    # Anthropic SDKs send their key as x-api-key; accept the gateway key there too.
    api_key = (request.headers.get("x-api-key") or "").strip()
    if api_key and "authorization" not in request.headers:
        return with_bearer(request, api_key)
    return request


def _guard_payload(guardrails: Guardrails, policy: Any, payload: bytes, event: RequestEvent) -> bytes:
    return check_answer_texts(guardrails, policy, payload, event, "content")


def _guard_response(guardrails: Guardrails, policy: Any, response: Response, event: RequestEvent) -> Response:
    chunks = once(response.body) if isinstance(response.body, bytes) else response.body
    response.body = guard_typed_stream(guardrails, policy, chunks, event, anthropic_error_event)
    return response


def _watch(ctx: RequestContext) -> AnthropicStream:
    return AnthropicStream()


SPEC = OperationSpec(
    name="messages", path=PATH, body_model=MessagesRequest, operation=MESSAGES,
    summary="Anthropic Messages API (any chat provider; SSE with stream: true)",
    watch=_watch, error_response=anthropic_error, credentials=_credentials,
    forward_headers=("anthropic-beta",),
    example={"model": "mock-1", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]},
    guard_payload=_guard_payload, guard_response=_guard_response,
    notes={"cache": "not cached: no renderer replays a stored answer as Anthropic events yet"},
)
