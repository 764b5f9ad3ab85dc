"""One upstream call with retries, failover, deadlines and honest failure reporting.

The caller ranks the route's targets with the route's strategy, then makes at most
``max_attempts`` attempts: untried available targets first (failover is immediate), then
retries of targets already tried, each after an exponential backoff with jitter. A target
whose circuit is open is skipped; one cooling down after a ``Retry-After`` is waited for
only when the wait fits in the remaining deadline.

An attempt succeeds only when the client can be given something whole:
- non-streaming: a 200 whose body was read completely and parses as a JSON object;
- streaming: a 200 whose first SSE event arrived within the time-to-first-byte timeout
  and is not an error event. That event is held back and replayed, so everything that
  can fail before the client sees a byte fails over transparently;
- binary (an answer passed through unread, e.g. audio): a 200 whose first chunk arrived
  within the time-to-first-byte timeout, held back and replayed the same way.
Client errors from the provider (4xx other than 408/409/425/429) end the call at once and
are relayed; they say nothing about the provider's health.

When every attempt fails the client gets 502 (provider errors, unreachable, malformed),
503 (rate limited or every circuit open; with ``Retry-After``) or 504 (timeouts), as
OpenAI error JSON, with ``x-flaregate-attempts``.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..errors import GatewayError, bad_request, upstream_error
from ..ports import (
    DEFAULT_LIMITS,
    Clock,
    Teed,
    UpstreamError,
    UpstreamLimits,
    UpstreamResponse,
    UpstreamResponseTooLarge,
    UpstreamStreamTooLarge,
    UpstreamTimeout,
    UpstreamTooLarge,
)
from ..providers.base import MESSAGES, RESPONSES
from ..providers.operations import sender_for
from ..providers.translated import read_limited
from ..redaction import redact
from ..request_event import RequestEvent
from ..sse_buffer import EventBuffer
from .health import HealthRegistry, TargetHealth, parse_retry_after
from .routes import RouteTargets, Target
from .settings import WILDCARD_ROUTE, RouteTarget
from .strategies import rank

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
MAX_ERROR_BODY = 4096
MAX_FIRST_EVENT = 65536  # bytes held back while waiting for the first complete SSE event
PIN_HEADER = "x-flaregate-provider"

Emit = Callable[[dict[str, Any]], None]


def _retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


class BufferedResponse:
    """An upstream response whose body is already read (non-streaming answers)."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = dict(headers)
        self._body = body

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        yield self._body

    async def read(self) -> bytes:
        return self._body

    async def aclose(self) -> None:
        return None


class PeekedStream:
    """A streaming upstream response whose first event was read before answering the client.

    It replays that event, then the rest; when closed it reports the stream's outcome to
    the target's health (a cut or stalled stream counts against the provider).

    It holds the stream to the caps: an event (or an unterminated line) over
    ``max_event_bytes``, or a stream over ``max_stream_bytes`` in all, ends it with
    UpstreamEventTooLarge / UpstreamStreamTooLarge, which the relays turn into their error
    event, as for any broken stream. The partial event is then dropped, never passed on.
    """

    def __init__(self, response: UpstreamResponse, rest: AsyncIterator[bytes], first: bytes,
                 on_close: Callable[[str, str], None], done_marker: bytes,
                 limits: UpstreamLimits = DEFAULT_LIMITS) -> None:
        self.status = response.status
        self.headers = dict(response.headers)
        self._response = response
        self._rest = rest
        self._first = first
        self._on_close = on_close
        self._done_marker = done_marker
        self._limits = limits
        self.events: EventBuffer | None = None  # while it streams: what it holds and has searched
        self._teed = False  # split by tee(): the client gets the body natively
        self._outcome = "abandoned"  # the client went away before the end
        self._detail = ""
        self._closed = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        # Only whole SSE events go out: when the upstream breaks mid-event, the partial
        # event is dropped, so the error event that follows is never glued onto it.
        tail = b""
        events = self.events = EventBuffer(self._limits.max_event_bytes)
        total, max_total = len(self._first), self._limits.max_stream_bytes
        chunk: bytes | None = self._first
        teed = self._teed
        try:
            while chunk is not None:
                if total > max_total and not teed:
                    raise UpstreamStreamTooLarge("a stream", max_total)
                out = events.feed(chunk)
                if out:
                    tail = (tail + out[-64:])[-64:]
                    yield out
                if total > max_total and not len(events):
                    # Passed through, the client has this chunk already: the cut comes at
                    # the first end of an event past the cap, so that it holds whole events.
                    raise UpstreamStreamTooLarge("a stream", max_total)
                chunk = await anext(self._rest, None)
                if chunk is not None:
                    total += len(chunk)
        except UpstreamError as exc:
            self._outcome = ("stalled" if isinstance(exc, UpstreamTimeout) else
                             "too_large" if isinstance(exc, UpstreamTooLarge) else "interrupted")
            self._detail = str(exc)
            raise
        pending = events.rest()
        if pending.strip():  # a last event without its closing blank line
            out = pending.rstrip(b"\r\n") + b"\n\n"
            tail = (tail + out[-64:])[-64:]
            yield out
        self._outcome = "complete" if self._done_marker in tail else "truncated"

    async def read(self) -> bytes:
        return await read_limited(self.aiter_bytes(), self._limits.max_response_bytes)

    def tee(self) -> Teed | None:
        """Split the rest of the body (before it is read on) when the transport can and
        nothing translated it: the copy is read on here, with the same caps and outcome.
        Only after a whole first event: an upstream that has not sent one yet (an endless
        first line) stays on the relay, which holds partial events back."""
        split = getattr(self._response, "tee", None)
        if split is None or self.events is not None or _first_event(self._first) is None:
            return None
        native = split()
        if native is None:
            return None
        self._teed = True
        return Teed(self._first, native, lambda: self.events.held() if self.events is not None else b"")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._response.aclose()
        finally:
            self._on_close(self._outcome, self._detail)


class PassedThrough:
    """A binary upstream answer whose first chunk was read before answering the client: it
    replays that chunk, then the rest as it comes, never more than ``max_stream_bytes`` in
    all (past it UpstreamStreamTooLarge); when closed it reports the outcome to the
    target's health, as :class:`PeekedStream` does."""

    def __init__(self, response: UpstreamResponse, rest: AsyncIterator[bytes], first: bytes,
                 on_close: Callable[[str, str], None], limits: UpstreamLimits = DEFAULT_LIMITS) -> None:
        self.status = response.status
        self.headers = dict(response.headers)
        self._response = response
        self._rest = rest
        self._first = first
        self._on_close = on_close
        self._limits = limits
        self._outcome = "abandoned"
        self._detail = ""
        self._closed = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        total, max_total = len(self._first), self._limits.max_stream_bytes
        chunk: bytes | None = self._first
        try:
            while chunk is not None:
                if total > max_total:
                    raise UpstreamStreamTooLarge("a binary answer", max_total)
                if chunk:
                    yield chunk
                chunk = await anext(self._rest, None)
                if chunk is not None:
                    total += len(chunk)
        except UpstreamError as exc:
            self._outcome = ("stalled" if isinstance(exc, UpstreamTimeout) else
                             "too_large" if isinstance(exc, UpstreamTooLarge) else "interrupted")
            self._detail = str(exc)
            raise
        self._outcome = "complete"

    async def read(self) -> bytes:
        return await read_limited(self.aiter_bytes(), self._limits.max_response_bytes)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._response.aclose()
        finally:
            self._on_close(self._outcome, self._detail)


@dataclass(slots=True)
class Failure:
    kind: str  # timeout, unreachable, status, malformed, stream_error, stream_empty, interrupted, too_large
    message: str
    status: int | None = None  # the provider's HTTP status, when it sent one
    retry_after: tuple[float, str] | None = None
    code: str | None = None  # the error code the client gets when this failure is the last


@dataclass(slots=True)
class Outcome:
    response: UpstreamResponse


def _first_event(buffer: bytes | bytearray, start: int = 0) -> bytes | None:
    """The first complete SSE event in ``buffer`` (without its blank line, LF-normalised),
    or None; ``start``: where a blank line may begin (none does before it)."""
    ends = [i for i in (buffer.find(b"\n\n", start), buffer.find(b"\n\r\n", start)) if i >= 0]
    if not ends:
        return None
    return bytes(buffer[:min(ends)]).replace(b"\r\n", b"\n").rstrip(b"\r")


def _is_error_event(event: bytes) -> bool:
    for line in event.split(b"\n"):
        if line.startswith(b"event:") and line[6:].strip() == b"error":
            return True
        if line.startswith(b"data:"):
            try:
                data = json.loads(line[5:])
            except ValueError:
                return False
            return isinstance(data, dict) and ("error" in data and "choices" not in data or data.get("type") == "error")
    return False


def _error_message(payload: bytes) -> str:
    try:
        parsed = json.loads(payload[:MAX_ERROR_BODY])
    except ValueError:
        return ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:300] if message else ""


class UpstreamCaller:
    def __init__(self, settings: Settings, clock: Clock, emit: Emit,
                 on_attempt: Callable[[str, bool, str], None] | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.policy = settings.resilience
        self.limits = self.policy.limits
        self._clock = clock
        self._emit = emit
        # Told of each attempt's verdict: (provider, ok, reason); a 4xx or 429 is not a fault.
        self._on_attempt = on_attempt or (lambda provider, ok, reason: None)
        self.sleep = sleep
        self.health = HealthRegistry(self.policy, clock, emit)
        self._timeouts = {p.name: p.timeout_seconds or settings.upstream_timeout_seconds for p in settings.providers}
        self._default_timeout = settings.upstream_timeout_seconds
        self._rng: random.Random | None = None
        # Provider keys: taken out of every upstream error text a client or the operator sees.
        self._secrets = [p.api_key.get_secret_value() for p in settings.providers if p.api_key]

    def _random(self) -> random.Random:
        # Seeded on first use (request time), never at import: Workers forbid entropy then.
        if self._rng is None:
            self._rng = random.Random()
        return self._rng

    def _backoff(self, retry: int) -> float:
        ceiling = min(self.policy.backoff_max_seconds, self.policy.backoff_base_seconds * 2 ** (retry - 1))
        return ceiling / 2 + self._random().uniform(0, ceiling / 2)  # "equal jitter"

    # -- the call --------------------------------------------------------------------------
    @staticmethod
    def pinned(targets: RouteTargets, pin: str | None) -> RouteTargets:
        """The route's targets of the provider a request pinned (``x-flaregate-provider``).
        Applied when routing, so the cache key (built from the targets) tells pins apart."""
        if not pin:
            return targets
        kept = RouteTargets(t for t in targets if t.provider.name == pin)
        if not kept:
            raise bad_request(f"Provider '{pin[:64]}' does not serve this model here; "
                              f"omit the {PIN_HEADER} header or name one of: "
                              f"{', '.join(sorted({t.provider.name for t in targets}))}.",
                              param=PIN_HEADER, code="invalid_provider")
        kept.strategy, kept.alias = targets.strategy, targets.alias
        return kept

    async def call(self, targets: list[Target], body: dict[str, Any], forward: Mapping[str, str],
                   event: RequestEvent, *, operation: str = "chat", stream: bool | None = None,
                   pin: str | None = None, idempotent: bool = True,
                   binary: bool = False) -> tuple[Target, UpstreamResponse]:
        """The first target that answers; retries and failover only for an ``idempotent`` call.
        ``binary``: the answer is passed through unread (not parsed, not an SSE stream)."""
        stream = body.get("stream") is True if stream is None else stream
        if pin and isinstance(targets, RouteTargets):
            targets = self.pinned(targets, pin)
        candidates = [t for t in targets if self._sender(t.provider, operation) is not None]
        if not candidates:
            raise bad_request(f"No provider routed for model '{body.get('model')}' supports {operation}.",
                              param="model", code="unsupported_operation")
        healths = [self.health.get(t.provider.name, t.model) for t in candidates]
        penalized = frozenset(i for i, h in enumerate(healths) if self.health.failed_recently(h))
        order = rank(getattr(targets, "strategy", "fallback"), candidates, healths,
                     stream=stream, body=body, rng=self._random(), penalized=penalized)
        deadline = self._clock.monotonic() + self.policy.deadline_seconds
        tried = [0] * len(candidates)
        attempts, failures = 0, list[Failure]()
        skipped_wait: float | None = None
        previous: int | None = None
        max_attempts = self.policy.max_attempts if idempotent else 1
        while attempts < max_attempts:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                break
            choice = self._pick(order, healths, tried, remaining, candidates)
            if choice is None and any(self._full(t, h) for t, h in zip(candidates, healths, strict=True)):
                event["attempts"] = attempts
                raise self._at_capacity(attempts)
            if choice is None:  # every target is switched off for longer than we can wait
                skipped_wait = min((max(self.health.circuit_wait(h), self.health.cooldown_wait(h))
                                    for h in healths), default=None)
                break
            index, wait = choice
            if wait > 0:
                await self.sleep(wait)
                if deadline - self._clock.monotonic() <= 0:
                    break
            target, health = candidates[index], healths[index]
            if previous is not None:
                self._emit({"type": "failover", "ts": round(self._clock.now(), 3),
                            "request_id": event.get("request_id"), "from": self._key(candidates[previous]),
                            "to": self._key(target), "reason": failures[-1].kind, "status": failures[-1].status,
                            "attempt": attempts + 1, "model": body.get("model"),
                            **({"tags": event["tags"]} if event.get("tags") else {})})
            attempts += 1
            tried[index] += 1
            event["attempts"] = attempts
            result = await self._attempt(target, health, operation, body, forward, stream, deadline, binary)
            if isinstance(result, Outcome):
                event["failovers"] = sum(1 for n in tried if n) - 1
                if failures:
                    event["upstream_failures"] = [f.kind for f in failures]
                return target, result.response
            failures.append(result)
            # Per-provider attempt outcomes for the hub (availability, failover events).
            event.setdefault("failed_providers", []).append(target.provider.name)
            previous = index
        event["attempts"] = attempts
        raise self._exhausted(failures, attempts, skipped_wait, deadline)

    @staticmethod
    def _full(target: Target, health: TargetHealth) -> bool:
        return target.max_in_flight is not None and health.in_flight >= target.max_in_flight

    @staticmethod
    def _at_capacity(attempts: int) -> GatewayError:
        return GatewayError(503, "Every provider for this model is at its concurrency limit (max_in_flight); "
                            "retry in 1s.", type="api_error", code="overloaded",
                            headers={"retry-after": "1", "x-flaregate-attempts": str(attempts)})

    def _pick(self, order: list[int], healths: list[TargetHealth], tried: list[int],
              remaining: float, candidates: list[Target]) -> tuple[int, float] | None:
        """(index, seconds to wait first) for the next attempt, or None to give up."""
        best: tuple[float, int, int] | None = None  # (wait, tries, rank position)
        for position, i in enumerate(order):
            h = healths[i]
            if self._full(candidates[i], h):
                continue  # at its concurrency cap: skipped like one cooling down
            circuit = self.health.circuit_wait(h)
            if circuit > 0:
                continue  # an open circuit fails fast; it is never waited for
            wait = self.health.cooldown_wait(h)
            if tried[i]:
                wait = max(wait, self._backoff(tried[i]))
            if wait >= remaining:
                continue  # its wait would outlast the deadline: skip it
            candidate = (0.0 if not tried[i] and wait == 0 else wait, tried[i], position)
            if best is None or candidate < best:
                best = candidate
        return None if best is None else (order[best[2]], best[0])

    @staticmethod
    def _sender(provider: Any, operation: str) -> Callable[..., Any] | None:
        return sender_for(provider, operation)  # the providers answer how they reach it

    @staticmethod
    def _key(target: Target) -> str:
        return f"{target.provider.name}/{target.model}"

    # -- one attempt -----------------------------------------------------------------------
    async def _attempt(self, target: Target, health: TargetHealth, operation: str, body: dict[str, Any],
                       forward: Mapping[str, str], stream: bool, deadline: float,
                       binary: bool = False) -> Outcome | Failure:
        started = self._clock.monotonic()
        attempt_timeout = min(self._timeouts.get(target.provider.name, self._default_timeout), deadline - started)
        first_byte = min(self.policy.first_byte_timeout_seconds or attempt_timeout, attempt_timeout)
        # The transport's own timeout bounds each network wait; for streams that is the
        # longest silence allowed between chunks once the stream runs.
        passing = stream or binary
        io_timeout = (self.policy.stream_idle_timeout_seconds or attempt_timeout) if passing else attempt_timeout
        send = self._sender(target.provider, operation)
        assert send is not None  # candidates were filtered on it
        self.health.acquire(health)
        handed_over = False
        try:
            try:
                response = await asyncio.wait_for(send(body, target.model, forward, timeout=io_timeout), first_byte)
            except (TimeoutError, UpstreamTimeout):
                return self._failed(health, started, Failure(
                    "timeout", f"no response within {first_byte:g}s"))
            except UpstreamError as exc:
                return self._failed(health, started, Failure("unreachable", f"unreachable ({exc})"))
            limit = getattr(response, "limit", None)
            if limit is not None:  # the caps reach the transport's response through any translation
                limit(self.limits)
            if response.status != 200:
                return await self._status(response, health, started, attempt_timeout)
            if binary:
                passed = await self._first_chunk(response, health, started, first_byte)
                handed_over = isinstance(passed, Outcome)
                return passed
            if not stream:
                return await self._whole_body(response, health, started, attempt_timeout)
            result = await self._first_event(response, health, started, first_byte, operation)
            handed_over = isinstance(result, Outcome)
            return result
        finally:
            if not handed_over:
                self.health.release(health)

    def _failed(self, health: TargetHealth, started: float, failure: Failure) -> Failure:
        # A timeout is a latency sample (the target is slow); a fast refusal is not one, or a
        # failing target would look like the fastest to the latency strategies.
        latency = (self._clock.monotonic() - started) * 1000 if failure.kind == "timeout" else None
        # Provider keys and bearer tokens out of the text before it goes anywhere: the health
        # report, webhooks (provider.down), and the client's answer once every attempt failed.
        failure.message = redact(failure.message, self._secrets)
        self.health.failure(health, failure.kind, failure.message, failure.status, failure.retry_after, latency)
        self._on_attempt(health.provider, failure.status is not None and failure.status < 500, failure.message)
        return failure

    def _left(self, started: float, budget: float) -> float:
        return max(0.001, budget - (self._clock.monotonic() - started))

    async def _status(self, response: UpstreamResponse, health: TargetHealth, started: float,
                      budget: float) -> Outcome | Failure:
        try:
            payload = await asyncio.wait_for(response.read(), self._left(started, budget))
        except (TimeoutError, UpstreamError):
            payload = b""
        finally:
            await response.aclose()
        if not _retryable(response.status):
            self.health.success(health, (self._clock.monotonic() - started) * 1000)
            self._on_attempt(health.provider, True, "")
            return Outcome(BufferedResponse(response.status, response.headers, payload))  # a client error to relay
        detail = _error_message(payload)
        retry_after = parse_retry_after(response.headers, self._clock.now())
        return self._failed(health, started, Failure(
            "status", f"HTTP {response.status}" + (f": {detail}" if detail else ""), response.status, retry_after))

    async def _whole_body(self, response: UpstreamResponse, health: TargetHealth, started: float,
                          budget: float) -> Outcome | Failure:
        try:
            payload = await asyncio.wait_for(response.read(), self._left(started, budget))
        except (TimeoutError, UpstreamTimeout):
            return self._failed(health, started, Failure("timeout", f"body not complete within {budget:g}s"))
        except UpstreamTooLarge as exc:
            return self._failed(health, started, Failure("too_large", f"body refused ({exc})", code=exc.code))
        except UpstreamError as exc:
            return self._failed(health, started, Failure("interrupted", f"connection broke mid-body ({exc})"))
        finally:
            await response.aclose()
        if len(payload) > self.limits.max_response_bytes:  # a response that does not keep to it itself
            refused = UpstreamResponseTooLarge("a body", self.limits.max_response_bytes)
            return self._failed(health, started, Failure("too_large", f"body refused ({refused})",
                                                         code=refused.code))
        try:
            parsed = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            parsed = None
        if not isinstance(parsed, dict):
            return self._failed(health, started, Failure("malformed", "200 whose body is not a JSON object"))
        self.health.success(health, (self._clock.monotonic() - started) * 1000)
        self._on_attempt(health.provider, True, "")
        return Outcome(BufferedResponse(200, response.headers, payload))

    async def _first_event(self, response: UpstreamResponse, health: TargetHealth, started: float,
                           first_byte: float, operation: str) -> Outcome | Failure:
        rest = response.aiter_bytes().__aiter__()
        buffer = bytearray()
        failure: Failure | None = None
        while failure is None:
            try:
                chunk = await asyncio.wait_for(rest.__anext__(), self._left(started, first_byte))
            except StopAsyncIteration:
                failure = Failure("stream_empty", "stream ended before its first event")
                break
            except (TimeoutError, UpstreamTimeout):
                failure = Failure("timeout", f"no stream event within {first_byte:g}s")
                break
            except UpstreamTooLarge as exc:  # a translated stream's own check
                failure = Failure("too_large", f"stream refused before its first event ({exc})", code=exc.code)
                break
            except UpstreamError as exc:
                failure = Failure("interrupted", f"stream broke before its first event ({exc})")
                break
            scan = max(0, len(buffer) - 2)  # only the new bytes (and two before) can end the event
            buffer += chunk
            event = _first_event(buffer, scan)
            if event is not None:
                if _is_error_event(event):
                    failure = Failure("stream_error", "stream began with an error event: "
                                      + event.decode(errors="replace")[:200])
                break
            if len(buffer) > MAX_FIRST_EVENT:
                break  # an enormous first event: pass it on rather than buffer without bound
        if failure is not None:
            await response.aclose()
            return self._failed(health, started, failure)
        marker = {MESSAGES: b"message_stop", RESPONSES: b"response.completed"}.get(operation, b"[DONE]")
        return Outcome(PeekedStream(response, rest, bytes(buffer), self._closer(health, started), marker,
                                    self.limits))

    async def _first_chunk(self, response: UpstreamResponse, health: TargetHealth, started: float,
                           first_byte: float) -> Outcome | Failure:
        """A binary answer: its first chunk (none: an empty body) within the first-byte timeout."""
        rest = response.aiter_bytes().__aiter__()
        failure: Failure | None = None
        first = b""
        try:
            first = await asyncio.wait_for(anext(rest, b""), self._left(started, first_byte))
        except (TimeoutError, UpstreamTimeout):
            failure = Failure("timeout", f"no answer byte within {first_byte:g}s")
        except UpstreamTooLarge as exc:
            failure = Failure("too_large", f"answer refused before its first byte ({exc})", code=exc.code)
        except UpstreamError as exc:
            failure = Failure("interrupted", f"answer broke before its first byte ({exc})")
        if failure is not None:
            await response.aclose()
            return self._failed(health, started, failure)
        return Outcome(PassedThrough(response, rest, first, self._closer(health, started), self.limits))

    def _closer(self, health: TargetHealth, started: float) -> Callable[[str, str], None]:
        """What a passed-on answer reports to the target's health when it closes (its first
        event or byte came now)."""
        ttft = (self._clock.monotonic() - started) * 1000

        def on_close(outcome: str, detail: str) -> None:
            self.health.release(health)
            total = (self._clock.monotonic() - started) * 1000
            if outcome == "complete":
                self.health.success(health, total, ttft)
                self._on_attempt(health.provider, True, "")
            elif outcome == "abandoned":
                self.health.abandon(health)
            else:
                self.health.failure(health, f"stream_{outcome}", detail or f"stream {outcome} after it began")
                self._on_attempt(health.provider, False, f"stream {outcome}")

        return on_close

    # -- giving up -------------------------------------------------------------------------
    def _exhausted(self, failures: list[Failure], attempts: int, skipped_wait: float | None,
                   deadline: float) -> GatewayError:
        headers = {"x-flaregate-attempts": str(attempts)}
        summary = redact("; ".join(f.message for f in failures[-4:]), self._secrets)  # _failed did; twice is cheap
        if not failures:
            wait = skipped_wait if skipped_wait is not None else self.policy.circuit_cooldown_seconds
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            exc = upstream_error(503, "Every provider for this model is unavailable (circuit open or cooling "
                                 f"down); retry in {headers['retry-after']}s.", code="upstream_unavailable")
        else:
            last = failures[-1]
            if last.status == 429:
                wait = last.retry_after[0] if last.retry_after else (skipped_wait or 1.0)
                headers["retry-after"] = str(max(1, math.ceil(wait)))
                exc = upstream_error(503, f"Providers are rate limiting this model ({summary}); "
                                     f"retry in {headers['retry-after']}s.", code="upstream_rate_limited")
            elif last.kind == "timeout" or deadline - self._clock.monotonic() <= 0:
                exc = upstream_error(504, f"Upstream timed out after {attempts} attempt(s): {summary}.",
                                     code="upstream_timeout")
            else:
                code = last.code or {"unreachable": "upstream_unreachable",
                                     "malformed": "upstream_malformed_response"}.get(last.kind, "upstream_error")
                exc = upstream_error(502, f"Upstream failed after {attempts} attempt(s): {summary}.", code=code)
        exc.headers.update(headers)
        return exc

    # -- visibility ------------------------------------------------------------------------
    def report(self, routes: list[tuple[str, str, list[RouteTarget]]], kinds: Mapping[str, str], *,
               detail: bool = False, allows: Callable[[str], bool] | None = None) -> dict[str, Any]:
        """The health of every route target (this process). Upstream error texts may carry
        another tenant's data, so ``recent_errors`` keep their messages only with ``detail``
        (the admin key: :func:`flaregate.security.provider_view.provider_view`); without it
        each error is its time, kind and status. ``allows``: only the routes (model aliases)
        it accepts, e.g. a key's ``allowed_models``; wildcard targets by the requested model."""
        data = []
        listed = set()
        for alias, strategy, targets in routes:
            for t in targets:
                if t.model is None and alias == WILDCARD_ROUTE:
                    continue  # keyed by each requested model: listed from the registry below
                model = t.model or alias  # None: the requested model, i.e. the alias itself
                listed.add((t.provider, model))
                if allows is not None and not allows(alias):
                    continue
                data.append({"route": alias, "strategy": strategy, "provider": t.provider,
                             "kind": kinds.get(t.provider), "model": model, "weight": t.weight,
                             "input_price_per_1m": t.input_price_per_1m, "output_price_per_1m": t.output_price_per_1m,
                             **self._health_report(self.health.get(t.provider, model), detail)})
        # Targets reached through the wildcard route are keyed by the requested model.
        for h in self.health.all():
            if (h.provider, h.model) not in listed and (allows is None or allows(h.model)):
                data.append({"route": "*", "strategy": None, "provider": h.provider,
                             "kind": kinds.get(h.provider), "model": h.model, **self._health_report(h, detail)})
        return {"object": "list", "scope": "process", "data": data}

    def _health_report(self, health: TargetHealth, detail: bool) -> dict[str, Any]:
        entry = self.health.report(health)
        if detail:  # the operator's view: the texts, with provider keys and bearer tokens taken out
            entry["recent_errors"] = [{**e, "message": redact(str(e.get("message") or ""), self._secrets)}
                                      for e in entry["recent_errors"]]
        else:
            entry["recent_errors"] = [{k: e.get(k) for k in ("ts", "kind", "status")} for e in entry["recent_errors"]]
        return entry
