"""The metrics hub: aggregates request events in SQL and pushes metrics to subscribers.

State lives in SQL so a hibernated Durable Object loses nothing. Ticks are rate limited:
after traffic changes the metrics, subscribers get one ``metrics`` message no later than
``tick_seconds`` after the previous one (the host's scheduler wakes the hub). The same
wake-up (``alarm``) compacts the retention rollups when due; the local host also calls
:meth:`MetricsHub.compact` from a periodic task. The WebSocket protocol is described in
docs/hub-protocol.md.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from .. import __version__
from ..observability.export import Exporters
from ..observability.prometheus import Exposition
from ..ports import Broadcaster, Clock, HostStats, Scheduler, SqlStorage
from .events import KINDS, EventDetector
from .health_score import HEALTH_WINDOW_SECONDS
from .histogram import BOUNDS_MS, INF_INDEX, METRICS, percentile
from .request_logs import CLASSES, DEFAULT_MAX_BYTES, UNAUTHENTICATED_MAX_RECORDS, RequestLogStore
from .store import COUNTERS, HOUR, MINUTE, HubStore
from .views import (
    DIMENSIONS,
    DROPPED_EVENT,
    LIVE_WINDOW_SECONDS,
    WINDOWS,
    merge,
    raw,
    render_analytics,
    render_health,
    render_snapshot,
)

log = logging.getLogger("flaregate.hub")

PROTOCOL_VERSION = 1
MAX_CLIENT_MESSAGE = 4096  # larger text frames get an error message
MAX_CLIENT_FRAME = 65536  # larger frames close the connection (1009) — hosts enforce it
MAX_BATCH = 1000  # events per publish call; the rest of an oversized batch is ignored
COMPACT_EVERY_SECONDS = 600
CLIENT_MESSAGES = ("ping", "snapshot")

__all__ = ["MetricsHub", "percentile", "PROTOCOL_VERSION", "MAX_CLIENT_MESSAGE", "MAX_CLIENT_FRAME", "WINDOWS"]


class MetricsHub:
    def __init__(
        self,
        sql: SqlStorage,
        clock: Clock,
        broadcaster: Broadcaster,
        scheduler: Scheduler,
        tick_seconds: float = 1.0,
        *,
        latency_target_ms: float = 2000.0,
        host_stats: HostStats | None = None,
        log_retention: dict[str, float] | None = None,
        exporters: Exporters | None = None,
        log_secrets: list[str] | None = None,
        export_on_record: bool = True,
        log_unauthenticated_max_records: int = UNAUTHENTICATED_MAX_RECORDS,
        log_max_bytes: int = DEFAULT_MAX_BYTES,
        log_sample_info_per_second: float = 0.0,
        peers: Callable[[], Awaitable[list[Any]]] | None = None,
        peer_count: int = 0,
    ) -> None:
        self._sql = sql
        self._clock = clock
        self._broadcaster = broadcaster
        self._scheduler = scheduler
        self._tick = tick_seconds
        self._latency_target_ms = latency_target_ms
        self._host_stats = host_stats
        # The other hub shards' snapshot parts (the first shard holds the /ws sockets), or None.
        self._peers = peers
        self._peer_count = peer_count
        self._store = HubStore(sql)
        self._events = EventDetector(sql, self._store)
        self.logs = RequestLogStore(sql, log_retention, log_secrets or (), log_unauthenticated_max_records,
                                    max_bytes=log_max_bytes, sample_info_per_second=log_sample_info_per_second)
        # OpenTelemetry / Datadog: fed here, sent from the wake-ups (None or empty: off).
        self.exporters = exporters if exporters else None
        # False where this hub folds other replicas' events too (the local host over Redis):
        # each replica then exports only its own, through :meth:`export`.
        self._export_on_record = export_on_record
        # /health is polled: its score is computed at most once per tick (and again after
        # new events), not with two SQL scans per call.
        self._health_cache: tuple[float, dict[str, Any]] | None = None
        now = clock.now()
        self._store.ensure_watermarks(now)
        if self._state("started_at") is None:
            self._set_state("started_at", now)

    # -- state helpers -------------------------------------------------------------------
    def _state(self, name: str) -> float | None:
        return self._store.state(name)

    def _set_state(self, name: str, value: float | None) -> None:
        self._store.set_state(name, value)

    # -- ingest --------------------------------------------------------------------------
    async def record(self, events: list[dict[str, Any]]) -> int:
        """Aggregate request events; returns how many requests were accepted (plus
        published ``{"event": ...}`` items such as a circuit change). Bad events are skipped.

        Only events without a ``type`` or with ``type: "request"`` are requests. Any other
        ``type`` (``circuit``, ``cooldown``, ``failover`` from the upstream caller,
        ``ratelimit_degraded``) and every ``{"event": ...}`` item is operational: counted in
        hub_state as ``event:<type>``, never as a request. Typed ones are relayed to the
        subscribers at once, as they are; the kinds the detector knows (circuit,
        ratelimit_degraded) also become folded ``event`` messages.
        """
        if not isinstance(events, list):
            return 0
        now = self._clock.now()
        items = [e for e in events[:MAX_BATCH] if isinstance(e, dict)]
        requests, published, operational = [], [], []
        for item in items:
            kind = item.get("type", "request")
            if "event" in item:
                published.append(item)
                self._store.count_event(item["event"])
            elif kind == DROPPED_EVENT:  # a sharded client's count of events it had to drop
                dropped = item.get("events")
                if isinstance(dropped, int) and not isinstance(dropped, bool) and 0 < dropped < 2**31:
                    self._set_state("analytics_dropped", (self._state("analytics_dropped") or 0) + dropped)
            elif kind != "request":
                operational.append(item)
                self._store.count_event(kind)
                self._relay_operational(item)  # circuit / cooldown / failover: as they happen
            else:
                requests.append(item)
        parsed = self._store.parse(requests, now)

        def write() -> None:  # rollups and log records: one transaction for the batch
            if parsed:
                self._store.ingest(parsed, now)
            if requests or operational:
                self._log(requests, operational, now)

        if parsed or requests or operational:
            self._store.atomically(write)
        alerts = (self._events.from_requests(parsed, now) + self._events.from_publishers(published, now)
                  + self._events.from_operational(operational, now))
        if parsed or alerts:
            self._health_cache = None
            self._set_state("dirty", 1)
            if self._state("compact_at") is None:
                self._set_state("compact_at", now + COMPACT_EVERY_SECONDS)
            await self._request_tick()
        if alerts and self._broadcaster.subscriber_count():
            for alert in alerts:
                self._broadcaster.broadcast(json.dumps({**alert, "protocol": PROTOCOL_VERSION}))
        if self._export_on_record and requests:
            await self.export(requests)
        return len(parsed) + len(published)

    async def export(self, events: list[dict[str, Any]]) -> None:
        """Queue request events for the exporters (memory only) and make sure a wake-up
        will send them. Operational and malformed items are left out."""
        if self.exporters is None or not isinstance(events, list):
            return
        requests = [e for e in events[:MAX_BATCH] if isinstance(e, dict) and "event" not in e
                    and e.get("type", "request") == "request"]
        if not requests:
            return
        try:
            self.exporters.offer(requests, self._clock.now())
        except Exception:  # an exporter never costs the hub its own work
            log.warning("could not queue %d events for export", len(requests), exc_info=True)
            return
        await self._schedule_wake()

    def _log(self, requests: list[dict[str, Any]], operational: list[dict[str, Any]], now: float) -> None:
        self.logs.write(requests, operational, now)
        if self._state("compact_at") is None:  # the alarm that expires the records
            self._set_state("compact_at", now + COMPACT_EVERY_SECONDS)

    def _relay_operational(self, event: dict[str, Any]) -> None:
        """Typed operational events go straight to the subscribers, as they happen."""
        if self._broadcaster.subscriber_count() and isinstance(event.get("type"), str):
            self._broadcaster.broadcast(json.dumps({**event, "protocol": PROTOCOL_VERSION}, default=str))

    # -- wake-ups ------------------------------------------------------------------------
    async def _request_tick(self) -> None:
        now = self._clock.now()
        pending = self._state("tick_at")
        if pending is not None and pending > now - 5 * self._tick:
            return  # one is already pending (an older one was lost, e.g. by a restart)
        last = self._state("last_broadcast") or 0.0
        self._set_state("tick_at", max(now, last + self._tick))
        await self._schedule_wake()

    async def _schedule_wake(self) -> None:
        """One alarm covers every pending reason to wake (a Durable Object has one slot)."""
        export_at = self.exporters.due_at() if self.exporters is not None else None
        wanted = [t for t in (self._state("tick_at"), self._state("compact_at"), export_at) if t is not None]
        if not wanted:
            return
        at = min(wanted)
        now = self._clock.now()
        wake = self._state("wake_at")
        if wake is not None and wake <= at and wake > now - 5 * self._tick:
            return  # an earlier wake-up is pending; it reschedules the rest
        self._set_state("wake_at", at)
        await self._scheduler.schedule(at)

    async def alarm(self) -> None:
        """The scheduled wake-up: broadcast if anything changed since the last tick (and
        keep ticking while the live window still holds traffic, so rates fall back to zero
        on screen), and compact the rollups when due."""
        now = self._clock.now()
        self._health_cache = None  # refreshed on the tick
        self._set_state("wake_at", None)
        self._set_state("tick_at", None)
        last = self._state("last_broadcast") or 0.0
        subscribers = self._broadcaster.subscriber_count()
        live_after = 0
        if self._state("dirty"):
            self._set_state("dirty", 0)
            live_after = await self._broadcast_metrics(now, subscribers)
        elif subscribers and self._state("live_requests") and now >= last + self._tick:
            live_after = await self._broadcast_metrics(now, subscribers)
        if subscribers and live_after:
            self._set_state("tick_at", now + self._tick)
        compact_at = self._state("compact_at")
        if compact_at is not None and now >= compact_at:
            self.compact()
        if self.exporters is not None:  # after the tick: a slow target never delays the broadcast
            await self.exporters.flush()
        await self._schedule_wake()

    async def _broadcast_metrics(self, now: float, subscribers: int) -> int:
        self._set_state("last_broadcast", now)
        if not subscribers:
            self._set_state("live_requests", 0)
            return 0
        snapshot = await self.merged_snapshot()
        live = snapshot["live"]["requests"]
        self._set_state("live_requests", live)
        self._broadcaster.broadcast(json.dumps({"type": "metrics", "protocol": PROTOCOL_VERSION, "metrics": snapshot}))
        return live

    async def merged_snapshot(self) -> dict[str, Any]:
        """The snapshot the subscribers see: this hub's, merged with the other shards' when
        it is the first of several (the one that holds the sockets); a shard that does not
        answer is left out (``shards`` says how many did)."""
        if self._peers is None:
            return self.snapshot()
        own = self.parts("snapshot")
        try:
            others = await self._peers()
        except Exception:
            log.warning("hub shards unavailable for the live snapshot", exc_info=True)
            others = []
        answered = [p for p in others if isinstance(p, dict)]
        snapshot = render_snapshot(merge([own, *answered]), self._latency_target_ms)
        snapshot["shards"] = {"answered": 1 + len(answered), "of": 1 + self._peer_count}
        return snapshot

    def compact(self) -> dict[str, int]:
        """Roll up and expire retention rows (idempotent; the alarm and the local periodic
        task both call it). Returns what it did, for logs and tests."""
        self._health_cache = None
        now = self._clock.now()
        report = self._store.compact(now)
        report["logs_expired"] = self.logs.expire(now)
        if self._store.has_rows(MINUTE):
            self._set_state("compact_at", now + COMPACT_EVERY_SECONDS)
        elif self._store.has_rows(HOUR) or self._store.has_rows(86400) or self.logs.has_rows():
            self._set_state("compact_at", now + HOUR)
        else:
            self._set_state("compact_at", None)
        return report

    # -- reads ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return render_snapshot(self.parts("snapshot"), self._latency_target_ms)

    def _process(self) -> dict[str, float] | None:
        if self._host_stats is None:
            return None
        try:
            return self._host_stats.sample()
        except Exception:
            log.debug("host stats unavailable", exc_info=True)
            return None

    def _health(self, now: float) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        return render_health(self._health_parts(now), self._latency_target_ms)

    def health_summary(self) -> dict[str, Any]:
        """What /health shows: the cached score, the request-log store's usage and, where
        known, this process's memory."""
        summary: dict[str, Any] = {"health": self.health(), "request_logs": self.logs.usage()}
        if self.exporters is not None:
            summary["exporters"] = self.exporters.status()
        process = self._process()
        if process:
            summary["process"] = process
        dropped = self._state("analytics_dropped")
        if dropped:
            summary["analytics_dropped"] = int(dropped)
        return summary

    def health(self) -> dict[str, Any]:
        now = self._clock.now()
        cached = self._health_cache
        if cached is None or not 0 <= now - cached[0] < self._tick:
            cached = self._health_cache = (now, self._health(now)[0])
        return dict(cached[1])

    def analytics(self, window: str | None = None) -> dict[str, Any]:
        """Windowed summaries (by provider, model and key, with a time series), the
        'where the time goes' view over recent requests, health and recent events."""
        return render_analytics(self.parts("analytics", window), self._latency_target_ms)

    # -- mergeable parts (views.py renders them; shards' parts merge first) -----------
    def parts(self, view: str, arg: str | None = None) -> dict[str, Any]:
        """The raw, additive material of one read: ``analytics`` (``arg``: a window),
        ``snapshot``, ``health`` (what /health shows) or ``prometheus`` (the text and the
        health parts its gauges are made of). JSON-able, string keys only."""
        now = self._clock.now()
        if view == "analytics":
            names = [arg] if arg in WINDOWS else list(WINDOWS)
            return {"ts": now, "windows": {name: self._window_parts(name, now) for name in names},
                    "samples": self._store.samples(phases=True), "health": self._health_parts(now),
                    "recent_events": self._events.recent()}
        if view == "snapshot":
            return self._snapshot_parts(now)
        if view == "health":
            summary = self.health_summary()
            summary["health"] = self._health_parts(now)
            return summary
        if view == "prometheus":
            return {"text": self.prometheus(), "health": self._health_parts(now)}
        raise ValueError(f"unknown view {view!r}")

    def _health_parts(self, now: float) -> dict[str, Any]:
        since = math.floor((now - HEALTH_WINDOW_SECONDS) / MINUTE) * MINUTE
        rows = self._store.totals("resolution = ? AND bucket >= ?", [MINUTE, since], group_by="provider")
        samples = self._store.samples(since=now - HEALTH_WINDOW_SECONDS)
        return {"rows": {row["name"]: {c: row[c] for c in ("requests", "failures", "attempts", "attempt_failures")}
                         for row in rows},
                "samples": [[s["provider"], s["ttft_ms"] if s["ttft_ms"] is not None else s["total_ms"]]
                            for s in samples]}

    def _snapshot_parts(self, now: float) -> dict[str, Any]:
        store = self._store
        lifetime, lifetime_params = store.lifetime_filter()
        parts: dict[str, Any] = {
            "ts": now, "started_at": self._state("started_at") or now,
            "sums": {
                "life": raw(store.totals(lifetime, lifetime_params)[0]),
                "errors": store.errors(lifetime, lifetime_params).get("", {}),
                "live": store.seconds(now - LIVE_WINDOW_SECONDS), "recent": store.seconds(now - 10),
                "providers": {row["name"]: {"requests": row["requests"], "errors": row["errors"]}
                              for row in store.totals(lifetime, lifetime_params, group_by="provider")},
                "event_counts": store.event_counts(),
                "subscribers": self._broadcaster.subscriber_count(),
            },
            "samples": store.samples(since=now - LIVE_WINDOW_SECONDS),
            "health": self._health_parts(now),
        }
        process = self._process()
        if process:
            parts["process"] = process
        return parts

    def _window_parts(self, name: str, now: float) -> dict[str, Any]:
        span, step = WINDOWS[name]
        store = self._store
        start = math.floor((now - span) / step) * step  # whole buckets: the first one may be partial
        where, params = store.window_filter(start, now)

        def hist(groups: dict[str, dict[str, dict[int, int]]], name: str) -> dict[str, dict[str, int]]:
            return {metric: {str(le): n for le, n in counts.items()} for metric, counts in groups.get(name, {}).items()}

        histograms = store.histograms(where, params)
        groups: dict[str, Any] = {}
        for dimension, column in DIMENSIONS:
            group_hist = store.histograms(where, params, column)
            group_errors = store.errors(where, params, column)
            groups[dimension] = {row["name"]: {"total": raw(row), "hist": hist(group_hist, row["name"]),
                                               "errors": group_errors.get(row["name"], {})}
                                 for row in store.totals(where, params, group_by=column)}
        return {"start": start, "total": raw(store.totals(where, params)[0]), "hist": hist(histograms, ""),
                "errors": store.errors(where, params).get("", {}), "groups": groups,
                "tags": store.tag_totals(start, rounded=False),  # request tags (x-flaregate-metadata)
                # spend-report dimensions (teams, REPORT_TAGS), added across shards like the tags
                "dimensions": store.dimension_totals(where, params, rounded=False),
                "series": {str(int(row["t"])): {k: v for k, v in row.items() if k != "t"}
                           for row in store.series(where, params, step)}}

    def prometheus(self) -> str:
        """Lifetime counters, latency histograms and health gauges in Prometheus text."""
        out = Exposition()
        lifetime, params = self._store.lifetime_filter()
        rows = self._sql.exec(
            "SELECT provider, model, key_id, " + ", ".join(f"SUM({c}) AS {c}" for c in COUNTERS)
            + f" FROM hub_rollup WHERE {lifetime} GROUP BY provider, model, key_id ORDER BY provider, model, key_id",
            *params,
        )
        counters = (
            ("flaregate_requests_total", "requests", "API requests handled."),
            ("flaregate_cache_hits_total", "cache_hits", "Requests answered from the response cache."),
            ("flaregate_cache_misses_total", "cache_misses", "Cacheable requests the cache could not answer."),
            ("flaregate_rate_limited_total", "rate_limited", "Requests the gateway's rate limiter rejected."),
            ("flaregate_streams_total", "streams", "Streaming requests."),
            ("flaregate_failovers_total", "failovers", "Requests answered (or failed) after trying more than one provider."),
            ("flaregate_upstream_attempts_total", "attempts", "Calls to providers, failover attempts included."),
            ("flaregate_upstream_attempt_failures_total", "attempt_failures", "Provider calls that failed."),
            ("flaregate_cost_usd_total", "cost_usd", "Estimated cost from the route targets' prices."),
            ("flaregate_cache_bytes_saved_total", "cache_bytes_saved",
             "Response bytes served from the cache or a shared in-flight answer instead of a provider."),
            ("flaregate_cache_tokens_saved_total", "cache_tokens_saved",
             "Completion tokens served from the cache or a shared in-flight answer."),
            ("flaregate_cache_kv_writes_avoided_total", "kv_writes_avoided",
             "Cached answers stored only in the hot and warm tiers: their TTL did not reach the cold tier (KV)."),
            ("flaregate_shed_total", "shed", "Requests refused with 503 overloaded by load shedding."),
        )
        for name, column, help_text in counters:
            out.family(name, "counter", help_text)
            for row in rows:
                out.sample(name, self._labels(row), row[column])
        out.family("flaregate_tokens_total", "counter", "Tokens in prompts (in) and completions (out).")
        for row in rows:
            out.sample("flaregate_tokens_total", {**self._labels(row), "direction": "in"}, row["tokens_in"])
            out.sample("flaregate_tokens_total", {**self._labels(row), "direction": "out"}, row["tokens_out"])
        out.family("flaregate_errors_total", "counter", "Failed requests by error class.")
        for row in self._sql.exec(
            f"SELECT provider, model, key_id, class, SUM(count) AS n FROM hub_error WHERE {lifetime}"
            " GROUP BY provider, model, key_id, class ORDER BY provider, model, key_id, class", *params,
        ):
            out.sample("flaregate_errors_total", {**self._labels(row), "class": row["class"]}, row["n"])
        tag_rows = self._sql.exec("SELECT tag, value, requests, errors FROM hub_tag_total ORDER BY tag, value")
        out.family("flaregate_tag_requests_total", "counter",
                   "Requests by request tag (only tags the operator allow-lists in METRICS_TAG_LABELS).")
        for row in tag_rows:
            out.sample("flaregate_tag_requests_total", {"tag": row["tag"], "value": row["value"]}, row["requests"])
        out.family("flaregate_tag_errors_total", "counter", "Failed requests by allow-listed request tag.")
        for row in tag_rows:
            out.sample("flaregate_tag_errors_total", {"tag": row["tag"], "value": row["value"]}, row["errors"])
        self._prometheus_histograms(out, lifetime, params)
        health, provider_health = self._health(self._clock.now())
        out.family("flaregate_health_score", "gauge", "Gateway health score, 0-100 (formula in docs).")
        out.sample("flaregate_health_score", {}, health["score"])
        out.family("flaregate_provider_health_score", "gauge", "Provider health score, 0-100.")
        for provider, detail in sorted(provider_health.items()):
            out.sample("flaregate_provider_health_score", {"provider": provider}, detail["health"])
        out.family("flaregate_operational_events_total", "counter",
                   "Operational events the hub received (not requests), by type.")
        for kind, count in self._store.event_counts().items():
            out.sample("flaregate_operational_events_total", {"type": kind}, count)
        if self.exporters is not None:
            self.exporters.prometheus(out)
        self._prometheus_logs(out, self.logs.usage())
        out.family("flaregate_analytics_events_dropped_total", "counter",
                   "Analytics events an isolate dropped because its hub shard stayed unreachable.")
        out.sample("flaregate_analytics_events_dropped_total", {}, int(self._state("analytics_dropped") or 0))
        out.family("flaregate_hub_subscribers", "gauge", "Live WebSocket subscribers of the metrics hub.")
        out.sample("flaregate_hub_subscribers", {}, self._broadcaster.subscriber_count())
        process = self._process()
        if process and "rss_bytes" in process:
            out.family("flaregate_process_resident_memory_bytes", "gauge", "Resident memory of the gateway process.")
            out.sample("flaregate_process_resident_memory_bytes", {}, process["rss_bytes"])
        if process and "wasm_memory_bytes" in process:  # the edge: the hub isolate's Python heap
            out.family("flaregate_isolate_wasm_memory_bytes", "gauge",
                       "WebAssembly memory of the metrics hub's isolate (its whole Python heap).")
            out.sample("flaregate_isolate_wasm_memory_bytes", {}, process["wasm_memory_bytes"])
        return out.text()

    @staticmethod
    def _prometheus_logs(out: Exposition, usage: dict[str, Any]) -> None:
        """The request-log store against its byte budget, per retention class."""
        classes = usage["classes"]
        for name, column, kind, help_text in (
            ("flaregate_request_log_bytes", "bytes", "gauge", "Estimated bytes the request-log store holds."),
            ("flaregate_request_log_records", "records", "gauge", "Request-log records held."),
            ("flaregate_request_log_evicted_total", "evicted", "counter",
             "Request-log records removed, oldest first, to stay within LOG_MAX_BYTES (or a bucket's cap)."),
            ("flaregate_request_log_expired_total", "expired", "counter", "Request-log records past their retention."),
            ("flaregate_request_log_sampled_out_total", "sampled_out", "counter",
             "Successful info records not stored (LOG_SAMPLE_INFO_PER_SECOND); kept ones carry sample_weight."),
        ):
            out.family(name, kind, help_text)
            for klass in CLASSES:
                out.sample(name, {"class": klass}, classes[klass][column])
        out.family("flaregate_request_log_budget_bytes", "gauge", "The request-log store's byte budget (LOG_MAX_BYTES).")
        out.sample("flaregate_request_log_budget_bytes", {}, usage["budget_bytes"])

    def _prometheus_histograms(self, out: Exposition, lifetime: str, params: list[Any]) -> None:
        names = {
            "total": ("flaregate_request_duration_seconds", "Time from request to response end.", "latency_sum_ms"),
            "upstream": ("flaregate_upstream_duration_seconds", "Time spent waiting on providers.", "upstream_sum_ms"),
            "overhead": ("flaregate_gateway_overhead_seconds", "Request time minus provider time.", "overhead_sum_ms"),
            "ttft": ("flaregate_time_to_first_token_seconds", "Streams: time to the first relayed byte.", "ttft_sum_ms"),
        }
        buckets: dict[tuple[str, str, str], list[int]] = {}
        for row in self._sql.exec(
            f"SELECT provider, model, metric, le, SUM(count) AS n FROM hub_histogram WHERE {lifetime}"
            " GROUP BY provider, model, metric, le", *params,
        ):
            counts = buckets.setdefault((row["metric"], row["provider"], row["model"]), [0] * (INF_INDEX + 1))
            counts[min(int(row["le"]), INF_INDEX)] += int(row["n"])
        sums = {(row["provider"], row["model"]): row for row in self._sql.exec(
            "SELECT provider, model, SUM(latency_sum_ms) AS latency_sum_ms, SUM(upstream_sum_ms) AS upstream_sum_ms,"
            " SUM(overhead_sum_ms) AS overhead_sum_ms, SUM(ttft_sum_ms) AS ttft_sum_ms FROM hub_rollup"
            f" WHERE {lifetime} GROUP BY provider, model", *params,
        )}
        bounds = [b / 1000 for b in BOUNDS_MS]
        for metric in METRICS:
            name, help_text, sum_column = names[metric]
            out.family(name, "histogram", help_text)
            for (m, provider, model), counts in sorted(buckets.items()):
                if m != metric:
                    continue
                total_ms = sums.get((provider, model), {}).get(sum_column, 0.0) or 0.0
                out.histogram(name, {"provider": provider, "model": model}, bounds, counts, total_ms / 1000)

    @staticmethod
    def _labels(row: dict[str, Any]) -> dict[str, str]:
        return {"provider": row["provider"], "model": row["model"], "key": row["key_id"]}

    # -- the WebSocket protocol ----------------------------------------------------------
    def message(self, kind: str) -> str:
        body: dict[str, Any] = {"type": kind, "protocol": PROTOCOL_VERSION, "metrics": self.snapshot()}
        if kind == "snapshot":
            now = self._clock.now()
            body["history"] = self._store.second_series(now - 120)
            body["recent_events"] = self._events.recent()
        return json.dumps(body)

    def hello(self) -> str:
        return json.dumps({
            "type": "hello", "protocol": PROTOCOL_VERSION, "server": "flaregate", "version": __version__,
            "tick_seconds": self._tick, "accepts": list(CLIENT_MESSAGES), "events": list(KINDS),
            "max_message_bytes": MAX_CLIENT_MESSAGE, "max_frame_bytes": MAX_CLIENT_FRAME,
        })

    async def merged_message(self, kind: str) -> str:
        """:meth:`message` over every shard (the Durable Object's greeting and replies)."""
        if self._peers is None:
            return self.message(kind)
        body: dict[str, Any] = {"type": kind, "protocol": PROTOCOL_VERSION, "metrics": await self.merged_snapshot()}
        if kind == "snapshot":
            now = self._clock.now()
            body["history"] = self._store.second_series(now - 120)
            body["recent_events"] = self._events.recent()
        return json.dumps(body)

    async def merged_reply(self, text: str | bytes) -> str | None:
        """:meth:`reply`, a snapshot asked for being every shard's."""
        reply = self.reply(text)
        if self._peers is not None and reply is not None and json.loads(reply).get("type") == "snapshot":
            return await self.merged_message("snapshot")
        return reply

    def welcome(self) -> str:
        """The snapshot message a new subscriber receives (after :meth:`hello`)."""
        return self.message("snapshot")

    def greeting(self) -> list[str]:
        """Every message a new subscriber receives, in order: hello, then snapshot."""
        return [self.hello(), self.welcome()]

    def reply(self, text: str | bytes) -> str | None:
        """Answer one client frame. Garbage gets an error message, never an exception."""
        if isinstance(text, bytes | bytearray) or len(text) > MAX_CLIENT_MESSAGE:
            return json.dumps({"type": "error", "message": "messages must be JSON text under 4 KiB"})
        try:
            message = json.loads(text)
        except ValueError:
            return json.dumps({"type": "error", "message": "message is not valid JSON"})
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            return json.dumps({"type": "pong", "ts": round(self._clock.now(), 3)})
        if kind == "snapshot":
            return self.message("snapshot")
        return json.dumps({"type": "error", "message": "unknown message type; use ping or snapshot"})
