"""What an operation declares: its path and body model, how the stages read it, which it
skips and why. The runner (``runner.py``) is the same for all of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from ..accounting import Usage
from ..errors import GatewayError
from ..http import Request, Response
from ..request_event import RequestEvent

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


@dataclass(frozen=True)
class OperationSpec:
    """One API operation on the pipeline.

    ``operation`` is what the providers are asked for (``providers.operations`` answers how
    each kind reaches it); ``idempotent`` allows retries and failover; ``cache`` None means
    the operation is never cached (the spec says why); ``guard_payload`` / ``guard_response``
    None means it has no answer text to check."""

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


async def once(body: bytes) -> AsyncIterator[bytes]:
    yield body
