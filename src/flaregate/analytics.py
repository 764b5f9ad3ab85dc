"""Analytics events: one per API request, sent to the metrics hub in batches, in the background.

:meth:`Analytics.record` completes the gateway's raw event (error class, upstream attempts,
gateway overhead, cost from the optional price table), writes the access log line and
buffers the event. The buffer goes to the hub as one ``publish`` call when it holds
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

from .error_classes import classify
from .logs import anonymize_ip
from .ports import BackgroundTasks, MetricsHubClient

log = logging.getLogger("flaregate.analytics")
access_log = logging.getLogger("flaregate.access")

# A provider's final answer that still counts as a failed attempt.
_FAILED_ANSWER = frozenset({"upstream_rate_limited", "upstream_error", "stream_error"})
_LOGGED_FIELDS = ("request_id", "trace_id", "status", "error_class", "model", "provider", "key_id", "cache",
                  "stream", "latency_ms", "upstream_ms", "overhead_ms", "ttft_ms", "tokens_in", "tokens_out",
                  "cost_usd")


def price_for(prices: Mapping[str, Any], event: dict[str, Any]) -> Any | None:
    provider, upstream_model, model = event.get("provider"), event.get("upstream_model"), event.get("model")
    for key in (f"{provider}/{upstream_model}", upstream_model, f"{provider}/{model}", model):
        if isinstance(key, str) and key in prices:
            return prices[key]
    return None


class Analytics:
    def __init__(
        self,
        hub: MetricsHubClient,
        tasks: BackgroundTasks,
        *,
        batch_size: int = 50,
        batch_delay_ms: int = 100,
        prices: Mapping[str, Any] | None = None,
        anonymize_ips: bool = True,
    ) -> None:
        self._hub = hub
        self._tasks = tasks
        self._batch_size = max(1, batch_size)
        self._delay = max(0, batch_delay_ms) / 1000
        self._prices = prices or {}
        self._anonymize = anonymize_ips
        self._buffer: list[dict[str, Any]] = []
        self._timer = False

    # -- recording -----------------------------------------------------------------------
    def record(self, event: dict[str, Any], client_ip: str | None = None) -> None:
        """``client_ip`` (or the event's ``client_ip``) goes to the access log only, never
        to the hub."""
        client_ip = client_ip or event.get("client_ip")
        event = self.complete(event)
        self._log(event, client_ip)
        self._submit(event)

    def notify(self, event: dict[str, Any]) -> None:
        """Publish an operational event, e.g. ``{"event": "circuit", "provider": p,
        "state": "open", "previous": "closed"}``; it travels with the request events."""
        self._submit(dict(event))

    def complete(self, raw: dict[str, Any]) -> dict[str, Any]:
        event = dict(raw)
        event.pop("client_ip", None)
        event["error_class"] = classify(event)
        failed = event.pop("failed_providers", None) or []
        attempts = [[provider, False] for provider in failed if isinstance(provider, str)]
        if event.get("provider") and "upstream_status" in event:
            attempts.append([event["provider"], event["error_class"] not in _FAILED_ANSWER])
        event["upstream_attempts"] = attempts
        latency = event.get("latency_ms")
        if isinstance(latency, int | float):
            upstream = event.get("upstream_ms") if isinstance(event.get("upstream_ms"), int | float) else 0.0
            event["overhead_ms"] = round(max(0.0, latency - upstream), 3)
        price = price_for(self._prices, event)
        if price is not None:
            tokens_in = event.get("tokens_in") if isinstance(event.get("tokens_in"), int) else 0
            tokens_out = event.get("tokens_out") if isinstance(event.get("tokens_out"), int) else 0
            event["cost_usd"] = round((tokens_in * price.input_per_1m + tokens_out * price.output_per_1m) / 1e6, 9)
        return event

    def _log(self, event: dict[str, Any], client_ip: str | None) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        fields = {name: event[name] for name in _LOGGED_FIELDS if event.get(name) is not None}
        fields["client_ip"] = anonymize_ip(client_ip) if self._anonymize else (client_ip or "-")
        access_log.info("request", extra={"fields": fields})

    # -- batching ------------------------------------------------------------------------
    def _submit(self, item: dict[str, Any]) -> None:
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
