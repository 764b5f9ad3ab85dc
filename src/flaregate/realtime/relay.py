"""One Realtime session's relay, between the client's socket and the provider's: event
driven (a host calls ``from_client`` / ``from_upstream`` per frame, and the ``*_closed``
methods), the same on both hosts.

Per frame the relay does as little as it can: a size check, a one-second message counter,
and a substring test. A frame is forwarded untouched unless its text names one of the few
event types the gateway reads: ``response.create`` from the client (a reservation under the
key's limits first), ``conversation.item.create`` / ``session.update`` when a guardrail
policy applies, and ``response.done`` from the provider (its usage settles the reservation).
Client frames that wait (a reservation on its way) keep their order: later frames queue
behind them.

A session ends exactly once (:meth:`end`): both sockets closed, the client told why with an
``error`` event and a close code when it was not its own doing, and the host's ``finished``
hook called (the request-log record, the session slot given back).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import GatewayError
from ..ports import Clock
from . import events
from .events import ResponseUsage
from .settings import RealtimeSettings

log = logging.getLogger("flaregate.realtime")

Frame = str | bytes


class Socket(Protocol):
    """One side of a session as the host gives it: ``send`` and ``close`` never block and
    never raise (a host queues a frame, or drops it for a socket already gone)."""

    def send(self, data: Any) -> None: ...
    def close(self, code: int, reason: str) -> None: ...


class Meter(Protocol):
    """What a session's responses cost, against the key's limits (``metering.py``)."""

    async def reserve(self) -> Any:
        """Reserve one response's units; raise GatewayError (429) when a limit or budget is out."""
        ...

    async def settle(self, reservation: Any, usage: ResponseUsage, response_id: str | None,
                     latency_ms: float) -> float:
        """Charge one response's real usage (``reservation`` None: none was made); its cost."""
        ...

    def guard(self, text: str) -> str | None:
        """A client frame through the guardrail policy: the frame (redacted), or None when
        it is not guarded; raise GatewayError when it is blocked."""
        ...


@dataclass(slots=True)
class SessionStats:
    """What the session's request-log record says about it."""

    started: float = 0.0
    messages_in: int = 0  # client -> provider frames
    messages_out: int = 0  # provider -> client frames
    bytes_in: int = 0
    responses: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cached_tokens: int = 0
    audio_tokens_in: int = 0
    audio_tokens_out: int = 0
    cost_usd: float = 0.0
    ended: str = ""  # how: client_closed, upstream_closed, upstream_dropped, idle_timeout, ...
    close_code: int = 0
    errors: list[str] = field(default_factory=list)


class Relay:
    def __init__(self, limits: RealtimeSettings, clock: Clock, meter: Meter, guarded: bool,
                 finished: Callable[[Relay], Awaitable[None]]) -> None:
        self._limits = limits
        self._clock = clock
        self._meter = meter
        self._guarded = guarded
        self._finished = finished
        self.client: Socket | None = None
        self.upstream: Socket | None = None
        self.stats = SessionStats(started=clock.monotonic())
        self.done = asyncio.Event()
        self._ended = False
        self._backlog: deque[Frame] = deque()
        self._draining: asyncio.Task[None] | None = None
        # (reservation, when) per response.create forwarded, oldest first
        self._reservations: deque[tuple[Any, float]] = deque()
        self._last_done = self.stats.started  # a response the provider began itself is timed from here
        self._window = 0.0
        self._in_window = 0
        self._last = self.stats.started
        self._timers: list[asyncio.TimerHandle] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def ended(self) -> bool:
        return self._ended

    def start(self, client: Socket, upstream: Socket) -> None:
        self.client, self.upstream = client, upstream
        loop = asyncio.get_running_loop()
        self._timers = [loop.call_later(self._limits.max_session_seconds, self._out_of_time),
                        loop.call_later(self._limits.idle_timeout_seconds, self._check_idle)]

    # -- frames ----------------------------------------------------------------------------
    def from_client(self, data: Frame) -> None:
        if self._ended:
            return
        size = len(data)
        if isinstance(data, str) and size * 4 > self._limits.max_message_bytes:
            size = len(data.encode())  # only a frame that may be too big is measured exactly
        stats = self.stats
        stats.messages_in += 1
        stats.bytes_in += size
        if size > self._limits.max_message_bytes:
            self.end("message_too_large", events.TOO_BIG, "message too big", events.error_event(
                "message_too_large", f"A client event of {size} bytes is over this gateway's limit of "
                f"{self._limits.max_message_bytes} bytes."))
            return
        now = self._clock.monotonic()
        self._last = now
        if now - self._window >= 1.0:
            self._window, self._in_window = now, 0
        self._in_window += 1
        if self._in_window > self._limits.max_messages_per_second:
            self.end("rate_limited", events.POLICY, "too many messages", events.error_event(
                "rate_limit_exceeded", f"More than {self._limits.max_messages_per_second:g} client events in a "
                "second.", type="rate_limit_error"))
            return
        if self._backlog or (isinstance(data, str) and self._must_read(data)):
            self._backlog.append(data)
            if self._draining is None:
                self._draining = self._spawn(self._drain())
            return
        assert self.upstream is not None
        self.upstream.send(data)

    def _must_read(self, text: str) -> bool:
        return events.RESPONSE_CREATE in text or (self._guarded and any(m in text for m in events.GUARDED))

    async def _drain(self) -> None:
        """Forward queued client frames in order, each read first if it must be."""
        try:
            while self._backlog and not self._ended:
                data = self._backlog.popleft()
                if isinstance(data, str) and self._must_read(data):
                    forwarded = await self._read(data)
                    if forwarded is None:
                        continue
                    data = forwarded
                if self._ended:
                    return
                assert self.upstream is not None
                self.upstream.send(data)
        finally:
            self._draining = None

    async def _read(self, text: str) -> str | None:
        """A frame that must be read: its reservation or its guardrail; the frame to forward
        (None: refused, the client told, or the session ended)."""
        kind = events.event_type(text)
        if kind == "response.create":
            try:
                self._reservations.append((await self._meter.reserve(), self._clock.monotonic()))
            except GatewayError as exc:
                self.end(exc.code or "limit", events.POLICY, "limit reached",
                         events.error_event(exc.code or "rate_limit_exceeded", exc.message, exc.type))
                return None
            return text
        if kind in ("conversation.item.create", "session.update") and self._guarded:
            try:
                guarded = self._meter.guard(text)
            except GatewayError as exc:  # blocked: this event is refused, the session goes on
                self.stats.errors.append(exc.code or "guardrail")
                assert self.client is not None
                self.client.send(events.error_event(exc.code or "guardrail_blocked", exc.message))
                return None
            return text if guarded is None else guarded
        return text

    def from_upstream(self, data: Frame) -> None:
        if self._ended:
            return
        self.stats.messages_out += 1
        self._last = self._clock.monotonic()
        assert self.client is not None
        self.client.send(data)
        if isinstance(data, str) and events.RESPONSE_DONE in data:
            self._response_done(data)

    def _response_done(self, text: str) -> None:
        rid, _, usage = events.response_done(text)
        if usage is None:
            return
        stats = self.stats
        stats.responses += 1
        stats.tokens_in += usage.input_tokens
        stats.tokens_out += usage.output_tokens
        stats.cached_tokens += usage.cached_tokens
        stats.audio_tokens_in += usage.input_audio_tokens
        stats.audio_tokens_out += usage.output_audio_tokens
        reservation, asked = self._reservations.popleft() if self._reservations else (None, self._last_done)
        self._last_done = now = self._clock.monotonic()
        self._spawn(self._settle(reservation, usage, rid, round((now - asked) * 1000, 3)))

    async def _settle(self, reservation: Any, usage: ResponseUsage, rid: str | None, latency_ms: float) -> None:
        try:
            self.stats.cost_usd += await self._meter.settle(reservation, usage, rid, latency_ms)
        except Exception:
            log.warning("could not settle a realtime response", exc_info=True)

    # -- closes and timers -------------------------------------------------------------------
    def client_closed(self, code: int | None = None) -> None:
        self.end("client_closed", events.NORMAL, "client closed", client_gone=True)

    def upstream_closed(self, code: int | None = None, reason: str = "") -> None:
        if self._ended:
            return
        if code == events.NORMAL:
            self.end("upstream_closed", events.NORMAL, "provider closed the session")
            return
        self.end("upstream_dropped", events.UPSTREAM_ERROR, "provider dropped the session", events.error_event(
            "upstream_disconnected", f"The provider closed the session unexpectedly (code {code}).",
            type="server_error"))

    def _out_of_time(self) -> None:
        self.end("max_duration", events.DURATION, "session time limit", events.error_event(
            "session_expired", f"The session reached this gateway's limit of "
            f"{self._limits.max_session_seconds:g} seconds."))

    def _check_idle(self) -> None:
        if self._ended:
            return
        idle = self._clock.monotonic() - self._last
        wait = self._limits.idle_timeout_seconds - idle
        if wait > 0:
            self._timers.append(asyncio.get_running_loop().call_later(wait, self._check_idle))
            return
        self.end("idle_timeout", events.IDLE, "idle timeout", events.error_event(
            "idle_timeout", f"No event either way for {self._limits.idle_timeout_seconds:g} seconds."))

    def end(self, how: str, code: int, reason: str, error: str | None = None, client_gone: bool = False) -> None:
        """End the session once: tell the client (unless it left), close both sockets."""
        if self._ended:
            return
        self._ended = True
        self.stats.ended, self.stats.close_code = how, code
        if error is not None:
            self.stats.errors.append(how)
        for timer in self._timers:
            timer.cancel()
        self._backlog.clear()
        if self.upstream is not None:  # first: the provider stops (and bills) at once
            self.upstream.close(events.NORMAL, "session ended")
        if self.client is not None and not client_gone:
            if error is not None:
                self.client.send(error)
            self.client.close(code, reason)
        self._spawn(self._finish())

    async def _finish(self) -> None:
        try:
            running = [t for t in self._tasks if t is not asyncio.current_task()]
            if running:  # the settlements still running are part of the record
                await asyncio.wait(running, timeout=5)
            await self._finished(self)
        except Exception:
            log.warning("could not finish a realtime session", exc_info=True)
        finally:
            self.done.set()

    def _spawn(self, job: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
