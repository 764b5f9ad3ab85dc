"""Analytics events: one per API request, sent to the metrics hub in batches, in the background.

:meth:`Analytics.record` completes the gateway's raw event (error class, upstream attempts,
gateway overhead, cost from the route targets' prices: the same ``PriceTable`` the spending
budgets use), writes the access log line and buffers the event. Events with a ``type``
other than ``request`` (e.g. ``ratelimit_degraded``) are operational: they are buffered as
they are, never logged or counted as requests. The buffer goes to the hub as one ``publish`` call when it holds
``batch_size`` events or ``batch_delay_ms`` after its first event, whichever comes first,
through the background-tasks port (``ctx.waitUntil`` on the edge, asyncio tasks locally),
so every event reaches the hub within the delay and no request waits for it. A hub that
fails loses that batch (logged) and never fails a request; the buffer never grows past
``batch_size``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ..accounting import PriceTable, Usage
from ..ports import BackgroundTasks, MetricsHubClient
from .error_classes import classify

log = logging.getLogger("flaregate.analytics")
access_log = logging.getLogger("flaregate.access")

# A provider's final answer that still counts as a failed attempt.
_FAILED_ANSWER = frozenset({"upstream_rate_limited", "upstream_error", "stream_error"})
_LOGGED_FIELDS = ("request_id", "trace_id", "status", "error_class", "model", "provider", "key_id", "cache",
                  "stream", "latency_ms", "upstream_ms", "overhead_ms", "ttft_ms", "tokens_in", "tokens_out",
                  "cost_usd")


class Analytics:
    def __init__(
        self,
        hub: MetricsHubClient,
        tasks: BackgroundTasks,
        *,
        batch_size: int = 50,
        batch_delay_ms: int = 400,
        prices: PriceTable | None = None,
    ) -> None:
        self._hub = hub
        self._tasks = tasks
        self._batch_size = max(1, batch_size)
        self._delay = max(0, batch_delay_ms) / 1000
        self._prices = prices
        self._buffer: list[dict[str, Any]] = []
        self._timer = False
        self._changes = 0  # events submitted plus batches sent: what a cached /health must not outlive

    # -- recording -----------------------------------------------------------------------
    def record(self, event: Mapping[str, Any]) -> None:
        """The event's ``client`` (already anonymised unless ``ANONYMIZE_IPS=false``) goes
        to the access log only, never to the hub."""
        if event.get("type", "request") != "request":
            self.notify(event)
            return
        client = event.get("client")
        event = self.complete(event)
        self._log(event, client)
        self._submit(event)

    def notify(self, event: Mapping[str, Any]) -> None:
        """Publish an operational event, e.g. ``{"event": "circuit", "provider": p,
        "state": "open", "previous": "closed"}``; it travels with the request events."""
        self._submit(dict(event))

    def complete(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        event = dict(raw)
        event.pop("client", None)
        event["error_class"] = classify(event)
        failed = event.pop("failed_providers", None) or []
        attempts = [[provider, False] for provider in failed if isinstance(provider, str)]
        if event.get("provider") and "upstream_status" in event:
            attempts.append([event["provider"], event["error_class"] not in _FAILED_ANSWER])
        event["upstream_attempts"] = attempts
        latency, upstream = event.get("latency_ms"), event.get("upstream_ms")
        if isinstance(latency, int | float):
            spent: float = upstream if isinstance(upstream, int | float) else 0.0
            event["overhead_ms"] = round(max(0.0, latency - spent), 3)
        cost = self._cost(event)
        if cost is not None:
            event["cost_usd"] = cost
        return event

    def _cost(self, event: dict[str, Any]) -> float | None:
        # Priced by the route the request resolved to (a conditional alias has no prices of its own).
        model, provider = event.get("route") or event.get("model"), event.get("provider")
        if self._prices is None or not isinstance(model, str) or not self._prices.prices_model(model):
            return None
        raw_in, raw_out, raw_upstream = event.get("tokens_in"), event.get("tokens_out"), event.get("upstream_model")
        tokens_in: int = raw_in if isinstance(raw_in, int) else 0
        tokens_out: int = raw_out if isinstance(raw_out, int) else 0
        upstream_model: str = raw_upstream if isinstance(raw_upstream, str) else model
        usage = Usage(max(0, tokens_in), max(0, tokens_out))
        return round(self._prices.cost(model, str(provider or ""), upstream_model, usage), 9)

    def _log(self, event: dict[str, Any], client: str | None) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        fields = {name: event[name] for name in _LOGGED_FIELDS if event.get(name) is not None}
        fields["client_ip"] = client or "-"
        access_log.info("request", extra={"fields": fields})

    # -- batching ------------------------------------------------------------------------
    def changes(self) -> int:
        """Grows with every event submitted and every batch the hub took or refused."""
        return self._changes

    def _submit(self, item: dict[str, Any]) -> None:
        self._changes += 1
        self._buffer.append(item)
        if len(self._buffer) >= self._batch_size:
            batch, self._buffer = self._buffer, []
            self._tasks.run(self._publish(batch))
        elif not self._timer:
            self._timer = True
            self._tasks.run(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(self._delay)
        finally:
            self._timer = False
        await self.flush()

    async def flush(self) -> None:
        """Send whatever is buffered now (hosts call it at shutdown)."""
        batch, self._buffer = self._buffer, []
        if batch:
            await self._publish(batch)

    async def _publish(self, events: list[dict[str, Any]]) -> None:
        try:
            await self._hub.publish(events)
        except Exception:  # the hub never fails a client's request
            log.warning("could not publish %d analytics events", len(events), exc_info=True)
        finally:
            self._changes += 1
