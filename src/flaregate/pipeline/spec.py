"""What an operation declares: its path and body model, how the stages read it, which it
skips and why. The runner (``runner.py``) is the same for all of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

from ..accounting import Usage
from ..errors import GatewayError, bad_request
from ..http import Request, Response
from ..request_event import RequestEvent
from ..security import limits

if TYPE_CHECKING:
    from ..cache.layer import CacheLayer, CachePlan, FlightRecorder
    from ..cache.store import CacheEntry
    from ..config import Settings
    from ..guardrails.checks import Guardrails
    from .context import RequestContext


class StreamWatch(Protocol):
    """Reads a streamed answer as it passes (never changes it): whether it ended properly,
    the usage it reported, and the error event that ends a broken one in its own dialect."""

    def feed(self, chunk: bytes) -> None: ...
    def complete(self) -> bool: ...
    def usage(self) -> Usage | None: ...
    def error_event(self, message: str, code: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """How answers of an operation are cached: the key's operation name, how a stored entry
    is replayed (None: chat's own rendering) and recorded (None: chat's recorder)."""

    operation: str
    render: Callable[[CacheEntry, CachePlan], bytes] | None = None
    recorder: Callable[[CacheLayer, CachePlan], FlightRecorder] | None = None


# The guardrails' answer checks: a whole payload, or a Response (whole, replayed or streamed).
PayloadGuard = Callable[["Guardrails", Any, bytes, RequestEvent], bytes]
ResponseGuard = Callable[["Guardrails", Any, Response, RequestEvent], Response]


def openai_error(exc: GatewayError) -> Response:
    return exc.to_response()


def no_check(body: dict[str, Any], settings: Settings) -> None:
    return None


def same_request(request: Request) -> Request:
    return request


def openai_usage(answer: Any) -> tuple[Any, Any]:
    """(tokens in, tokens out) of an answer's ``usage``, whichever vocabulary it speaks."""
    usage = answer.get("usage") if isinstance(answer, Mapping) else None
    if not isinstance(usage, Mapping):
        return None, None
    return (usage.get("prompt_tokens", usage.get("input_tokens")),
            usage.get("completion_tokens", usage.get("output_tokens")))


def estimate_from_body(ctx: RequestContext) -> Mapping[str, Any]:
    return ctx.body


def text_estimate(name: str) -> Callable[[RequestContext], Mapping[str, Any]]:
    """What the limits estimate for an operation whose one text is ``body[name]`` (a prompt,
    an input): its length, and a single token out (it writes no completion)."""

    def estimate(ctx: RequestContext) -> Mapping[str, Any]:
        return {"messages": ctx.body.get(name), "max_tokens": 1}

    return estimate


def no_usage(answer: Any) -> tuple[Any, Any]:
    """An answer that reports no usage: the limits' estimate stands."""
    return None, None


def json_body(request: Request, settings: Settings) -> dict[str, Any]:
    """The request's JSON object body: 415 for another content-type, 413 past
    ``MAX_BODY_BYTES``, 400 for bad JSON, JSON nested too deep, or not an object."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise GatewayError(415, "Content-Type must be application/json.", code="unsupported_media_type")
    if len(request.body) > settings.max_body_bytes:
        raise GatewayError(413, f"Request body exceeds {settings.max_body_bytes} bytes.", code="request_too_large")
    body = limits.parse_json(request.body, settings.security.max_json_depth)
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return body


# What an answer is: "json", read whole and parsed (usage, output guard, cache), or
# "binary", passed through to the client chunk by chunk as the provider sends it (audio,
# or any answer the gateway does not read), never held whole, recorded once at its end.
Answer = Literal["json", "binary"]


def json_answer(body: Mapping[str, Any]) -> Answer:
    return "json"


def binary_answer(body: Mapping[str, Any]) -> Answer:
    return "binary"


@dataclass(frozen=True)
class OperationSpec:
    """One API operation on the pipeline.

    ``operation`` is what the providers are asked for (``providers.operations`` answers how
    each kind reaches it); ``idempotent`` allows retries and failover; ``cache`` None means
    the operation is never cached (the spec says why); ``guard_payload`` / ``guard_response``
    None means it has no answer text to check; ``parse`` reads the body into the dict the
    stages share (then checked against ``body_model``); ``answer`` says, from that body,
    whether the answer is JSON or passed through as it comes (a binary answer is never
    cached nor guarded)."""

    name: str
    path: str
    body_model: type[BaseModel]
    summary: str
    operation: str
    watch: Callable[[RequestContext], StreamWatch]
    idempotent: bool = True
    cache: CacheSpec | None = None
    predictive: bool = False  # the predictive warmer re-asks this operation's most-hit entries
    guard_payload: PayloadGuard | None = None
    guard_response: ResponseGuard | None = None
    error_response: Callable[[GatewayError], Response] = openai_error
    credentials: Callable[[Request], Request] = same_request  # where the key may also come from
    check: Callable[[dict[str, Any], Settings], None] = no_check  # beyond the body model
    forward_headers: tuple[str, ...] = ()  # client headers passed to the provider as they are
    estimate: Callable[[RequestContext], Mapping[str, Any]] = estimate_from_body  # what limits estimate
    usage: Callable[[Any], tuple[Any, Any]] = openai_usage
    # After the route: what the operation resolves itself (e.g. stored conversation turns).
    prepare: Callable[[RequestContext], Awaitable[None]] | None = None
    # A whole answer (parsed) or a finished stream's watch, once the client has it.
    answered: Callable[[RequestContext, Any], None] | None = None
    streamed: Callable[[RequestContext, StreamWatch], None] | None = None
    notes: Mapping[str, str] = field(default_factory=dict)  # the stages it skips, and why
    example: Mapping[str, Any] = field(default_factory=dict)  # a valid body (docs, the conformance test)
    parse: Callable[[Request, Settings], dict[str, Any]] = json_body
    media_type: str = "application/json"  # what ``parse`` reads (docs, the conformance test)
    answer: Callable[[Mapping[str, Any]], Answer] = json_answer


async def once(body: bytes) -> AsyncIterator[bytes]:
    yield body
