"""Operational events the core can see for itself, turned into webhook events.

- ``provider.down`` after ``DOWN_AFTER`` consecutive failed calls to a provider
  (connection error, timeout, 5xx), ``provider.up`` on its first success after that;
- ``failover`` each time a request moves on from a failed target to the next one;
- ``rate_limit.saturated`` when a key is refused by the rate limiter (once per key per
  ``QUIET_SECONDS``);
- ``budget.exceeded`` when a key's spending budget refuses a request (once per key and
  budget per ``QUIET_SECONDS``);
- ``error_rate.high`` when, over the last ``WINDOW_SECONDS``, at least ``MIN_REQUESTS``
  requests were answered and ``ERROR_RATE`` of them with a 5xx (once per ``QUIET_SECONDS``).

State is per process (per isolate on the edge), so on the edge an event may be raised by
more than one isolate. Circuit-breaker events are emitted by their own module
through the same dispatcher.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ..ports import Clock
from ..security.webhooks import WebhookDispatcher

DOWN_AFTER = 3
WINDOW_SECONDS = 60.0
MIN_REQUESTS = 20
ERROR_RATE = 0.5
QUIET_SECONDS = 300.0
_MAX_SAMPLES = 10_000
_MAX_THROTTLED = 10_000


class Alerts:
    def __init__(self, dispatcher: WebhookDispatcher, clock: Clock) -> None:
        self._dispatcher = dispatcher
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._down: set[str] = set()
        self._outcomes: deque[tuple[float, bool]] = deque(maxlen=_MAX_SAMPLES)
        self._errors = 0  # failed outcomes in the deque, kept as it changes (no per-request sum)
        self._last_sent: dict[str, float] = {}

    def _throttled(self, key: str) -> bool:
        now = self._clock.monotonic()
        last = self._last_sent.get(key)
        if last is not None and now - last < QUIET_SECONDS:
            return True
        if len(self._last_sent) >= _MAX_THROTTLED:
            self._last_sent.clear()
        self._last_sent[key] = now
        return False

    def upstream_result(self, provider: str, ok: bool, reason: str = "") -> None:
        if ok:
            self._failures.pop(provider, None)
            if provider in self._down:
                self._down.discard(provider)
                self._dispatcher.emit("provider.up", {"provider": provider})
            return
        count = self._failures[provider] = self._failures.get(provider, 0) + 1
        if count >= DOWN_AFTER and provider not in self._down:
            self._down.add(provider)
            self._dispatcher.emit("provider.down", {"provider": provider, "consecutive_failures": count,
                                                    "last_error": reason})

    def failover(self, model: str, failed: str, next_provider: str, reason: str,
                 tags: dict[str, str] | None = None) -> None:
        payload: dict[str, Any] = {"model": model[:256], "from": failed, "to": next_provider, "reason": reason}
        if tags:  # the request's tags (bounded by metadata/tags.py): whose traffic failed over
            payload["tags"] = tags
        self._dispatcher.emit("failover", payload)

    def rate_limited(self, key_id: str, limit: Any) -> None:
        if not self._throttled("ratelimit:" + key_id):
            self._dispatcher.emit("rate_limit.saturated", {"key_id": key_id, "limit": limit})

    def budget_exceeded(self, key_id: str, budget: str, limit_usd: Any, period: str) -> None:
        if not self._throttled(f"budget:{key_id}:{budget}"):
            self._dispatcher.emit("budget.exceeded", {"key_id": key_id, "budget": budget,
                                                      "limit_usd": limit_usd, "period": period})

    def request_finished(self, status: int) -> None:
        now = self._clock.monotonic()
        outcomes, failed = self._outcomes, status >= 500
        if len(outcomes) == outcomes.maxlen and outcomes[0][1]:
            self._errors -= 1  # the oldest outcome falls out of the bounded deque
        outcomes.append((now, failed))
        self._errors += failed
        while outcomes and outcomes[0][0] < now - WINDOW_SECONDS:
            self._errors -= outcomes.popleft()[1]
        total = len(outcomes)
        if total < MIN_REQUESTS:
            return
        errors = self._errors
        if errors / total >= ERROR_RATE and not self._throttled("error_rate"):
            self._dispatcher.emit("error_rate.high", {"window_seconds": WINDOW_SECONDS, "requests": total,
                                                      "errors": errors, "error_rate": round(errors / total, 3)})
