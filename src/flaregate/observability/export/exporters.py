"""The exporters the hub feeds: each a bounded queue, an encoder and a target URL.

The hub hands :meth:`Exporters.offer` every batch of request events it receives (memory
only: a projection appended to each queue) and calls :meth:`Exporters.flush` from its
wake-up (the Durable Object alarm on the edge, the asyncio scheduler locally), so no
export ever runs on a request's path. One flush sends at most a few batches per exporter
and never raises: a target that is down costs retries with backoff and, once a queue is
full, dropped items, all counted in :meth:`status` and :meth:`prometheus`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...ports import Clock, UpstreamTransport
from ..prometheus import Exposition
from .datadog import DatadogEncoder
from .otlp import OtlpEncoder
from .queue import ExportQueue
from .records import export_record
from .settings import ExportSettings

if TYPE_CHECKING:
    from ...config import Settings

log = logging.getLogger("flaregate.export")

MAX_BATCHES_PER_FLUSH = 8  # bounded work per wake-up; a longer queue continues at the next
_DATADOG_TIMEOUT_SECONDS = 10.0
Encode = Callable[[list[dict[str, Any]], float, float], bytes]  # (batch, window start, window end)


@dataclass
class _Sink:
    name: str
    url: str
    headers: dict[str, str]
    timeout: float
    queue: ExportQueue
    encode: Encode
    window_end: float | None = None  # where the last delta window ended (metrics)
    body: tuple[int, bytes] | None = None  # the head batch's encoding, kept while it is retried


class Exporters:
    def __init__(self, settings: ExportSettings, transport: UpstreamTransport, clock: Clock, *,
                 provider_kinds: dict[str, str] | None = None, environment: str | None = None) -> None:
        self._transport = transport
        self._clock = clock
        self._busy = False
        self.sinks: list[_Sink] = []
        otlp, dd = settings.otlp, settings.datadog

        def queue(capacity: int, batch: int, interval: float) -> ExportQueue:
            return ExportQueue(capacity, batch, interval, max_attempts=settings.max_attempts,
                               retry_base_seconds=settings.retry_base_seconds)

        resource = dict(otlp.resource_attributes)
        if environment:
            resource.setdefault("deployment.environment.name", environment)
        encoder = OtlpEncoder(otlp.service_name, resource, provider_kinds or {})
        json_headers = {"content-type": "application/json"}
        timeout = otlp.timeout_ms / 1000
        if traces := otlp.url("traces"):
            self.sinks.append(_Sink("otlp_traces", traces, {**json_headers, **otlp.signal_headers("traces")}, timeout,
                                    queue(otlp.max_queue_size, otlp.max_export_batch_size,
                                          otlp.schedule_delay_ms / 1000),
                                    lambda batch, start, end: encoder.traces(batch)))
        if metrics := otlp.url("metrics"):
            self.sinks.append(_Sink("otlp_metrics", metrics, {**json_headers, **otlp.signal_headers("metrics")},
                                    timeout, queue(otlp.max_queue_size, otlp.max_queue_size,
                                                   otlp.metric_export_interval_ms / 1000), encoder.metrics))
        if dd.api_key is not None:
            tags = (*dd.tags, *((f"env:{environment}",) if environment and not any(
                t.startswith("env:") for t in dd.tags) else ()))
            dd_encoder = DatadogEncoder(tags, dd.flush_seconds)
            dd_headers = {**json_headers, "dd-api-key": dd.api_key.get_secret_value()}
            self.sinks.append(_Sink("datadog_series", dd.series_url(), dd_headers, _DATADOG_TIMEOUT_SECONDS,
                                    queue(dd.queue_size, dd.queue_size, dd.flush_seconds),
                                    lambda batch, start, end: dd_encoder.series(batch, end)))
            if dd.logs:
                self.sinks.append(_Sink("datadog_logs", dd.logs_intake_url(), dd_headers, _DATADOG_TIMEOUT_SECONDS,
                                        queue(dd.queue_size, min(dd.queue_size, 1000), dd.flush_seconds),
                                        lambda batch, start, end: dd_encoder.logs(batch)))

    def __bool__(self) -> bool:
        return bool(self.sinks)

    # -- intake (the hub's ``record``: memory only) --------------------------------------
    def offer(self, events: list[dict[str, Any]], now: float) -> None:
        records = [r for r in (export_record(e) for e in events) if r is not None]
        if records:
            for sink in self.sinks:
                sink.queue.offer(records, now)

    def due_at(self) -> float | None:
        times = [s.queue.next_at for s in self.sinks if len(s.queue) and s.queue.next_at is not None]
        return min(times) if times else None

    # -- sending (the hub's wake-up) -----------------------------------------------------
    async def flush(self, *, final: bool = False) -> None:
        """Send what is due; never raises. Concurrent calls (two wake-ups) do nothing.
        ``final`` (a host shutting down): whatever is queued goes now, one attempt each."""
        if self._busy:
            return
        self._busy = True
        try:
            if final:
                for sink in self.sinks:
                    sink.queue.next_at = self._clock.now() if len(sink.queue) else None
            await asyncio.gather(*(self._drain(sink) for sink in self.sinks))
        finally:
            self._busy = False

    async def _drain(self, sink: _Sink) -> None:
        for _ in range(MAX_BATCHES_PER_FLUSH):
            now = self._clock.now()
            if not sink.queue.due(now):
                return
            batch = sink.queue.batch()
            start = sink.window_end if sink.window_end is not None else min(float(r["ts"]) for r in batch)
            try:
                if sink.body is None or sink.body[0] != len(batch):  # a retry sends the same bytes
                    sink.body = (len(batch), sink.encode(batch, start, now))
                status = await self._post(sink, sink.body[1])
            except Exception as exc:  # the target is down, slow or broke the connection
                self._failed(sink, len(batch), f"{type(exc).__name__}: {exc}", retry=True)
                return
            if 200 <= status < 300:
                sink.body = None
                sink.queue.sent_ok(len(batch), self._clock.now())
                sink.window_end = now
                continue
            # 429 and 5xx may pass; any other answer will not change on a retry.
            self._failed(sink, len(batch), f"HTTP {status}", retry=status == 429 or status >= 500)
            return

    async def _post(self, sink: _Sink, body: bytes) -> int:
        response = await self._transport.send("POST", sink.url, sink.headers, body, sink.timeout)
        try:
            await response.read()
        finally:
            await response.aclose()
        return response.status

    def _failed(self, sink: _Sink, count: int, error: str, *, retry: bool) -> None:
        first = sink.queue.failures == 0 or sink.queue.last_error != error[:200]
        dropped = sink.queue.dropped
        sink.queue.failed(count, self._clock.now(), error, retry=retry)
        if sink.queue.dropped != dropped:  # the batch is gone: the next one is encoded afresh
            sink.body = None
        (log.warning if first else log.debug)("export to %s failed (%s); %d queued, %d dropped so far",
                                              sink.name, error, len(sink.queue), sink.queue.dropped)

    # -- reporting -----------------------------------------------------------------------
    def status(self) -> dict[str, dict[str, Any]]:
        """Per exporter: queued / capacity / sent / dropped / failures (for /health)."""
        return {sink.name: {k: v for k, v in sink.queue.status().items() if k != "last_error"}
                for sink in self.sinks}

    def prometheus(self, out: Exposition) -> None:
        families = (
            ("flaregate_export_sent_total", "counter", "sent", "Records an exporter delivered."),
            ("flaregate_export_dropped_total", "counter", "dropped",
             "Records an exporter dropped: its queue was full or their batch ran out of attempts."),
            ("flaregate_export_failures_total", "counter", "failures", "Failed export attempts."),
            ("flaregate_export_queue_size", "gauge", "queued", "Records waiting in an exporter's queue."),
            ("flaregate_export_queue_capacity", "gauge", "capacity", "The most records an exporter's queue holds."),
        )
        statuses = {sink.name: sink.queue.status() for sink in self.sinks}
        for name, kind, field, help_text in families:
            out.family(name, kind, help_text)
            for exporter, status in statuses.items():
                out.sample(name, {"exporter": exporter}, status[field])


def build_exporters(settings: Settings, transport: UpstreamTransport, clock: Clock) -> Exporters | None:
    """The configured exporters for a host's hub; None when every one is off (the default)."""
    if not settings.export.enabled:
        return None
    return Exporters(settings.export, transport, clock, environment=settings.environment,
                     provider_kinds={provider.name: provider.kind for provider in settings.providers})
