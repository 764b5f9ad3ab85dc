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
from typing import Any

from .. import __version__
from ..observability.export import Exporters
from ..observability.prometheus import Exposition
from ..ports import Broadcaster, Clock, HostStats, Scheduler, SqlStorage
from .events import KINDS, EventDetector
from .health_score import HEALTH_WINDOW_SECONDS, health_score
from .histogram import BOUNDS_MS, INF_INDEX, METRICS, percentile, quantile
from .request_logs import UNAUTHENTICATED_MAX_RECORDS, RequestLogStore
from .store import COUNTERS, HOUR, INT_COUNTERS, MINUTE, HubStore
from .time_budget import where_the_time_goes

log = logging.getLogger("flaregate.hub")

PROTOCOL_VERSION = 1
MAX_CLIENT_MESSAGE = 4096  # larger text frames get an error message
MAX_CLIENT_FRAME = 65536  # larger frames close the connection (1009) — hosts enforce it
MAX_BATCH = 1000  # events per publish call; the rest of an oversized batch is ignored
LIVE_WINDOW_SECONDS = 60
COMPACT_EVERY_SECONDS = 600
WINDOWS = {"1h": (3600, 60), "24h": (86400, 3600), "30d": (30 * 86400, 86400),
           "1y": (365 * 86400, 7 * 86400)}  # the archive: daily rows kept a year, weekly series
CLIENT_MESSAGES = ("ping", "snapshot")

# Kept for callers of the old module API.
_COUNTERS = ("requests", "errors", "cache_hits", "cache_misses", "rate_limited", "tokens_in", "tokens_out")
__all__ = ["MetricsHub", "percentile", "PROTOCOL_VERSION", "MAX_CLIENT_MESSAGE", "MAX_CLIENT_FRAME", "WINDOWS"]


def _rate(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _numbers(row: dict[str, Any]) -> dict[str, Any]:
    return {c: (int(row[c]) if c in INT_COUNTERS else round(float(row[c]), 6)) for c in COUNTERS}


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
    ) -> None:
        self._sql = sql
        self._clock = clock
        self._broadcaster = broadcaster
        self._scheduler = scheduler
        self._tick = tick_seconds
        self._latency_target_ms = latency_target_ms
        self._host_stats = host_stats
        self._store = HubStore(sql)
        self._events = EventDetector(sql, self._store)
        self.logs = RequestLogStore(sql, log_retention, log_secrets or (), log_unauthenticated_max_records)
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
            live_after = self._broadcast_metrics(now, subscribers)
        elif subscribers and self._state("live_requests") and now >= last + self._tick:
            live_after = self._broadcast_metrics(now, subscribers)
        if subscribers and live_after:
            self._set_state("tick_at", now + self._tick)
        compact_at = self._state("compact_at")
        if compact_at is not None and now >= compact_at:
            self.compact()
        if self.exporters is not None:  # after the tick: a slow target never delays the broadcast
            await self.exporters.flush()
        await self._schedule_wake()

    def _broadcast_metrics(self, now: float, subscribers: int) -> int:
        self._set_state("last_broadcast", now)
        if not subscribers:
            self._set_state("live_requests", 0)
            return 0
        snapshot = self.snapshot()
        live = snapshot["live"]["requests"]
        self._set_state("live_requests", live)
        self._broadcaster.broadcast(json.dumps({"type": "metrics", "protocol": PROTOCOL_VERSION, "metrics": snapshot}))
        return live

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
        now = self._clock.now()
        store = self._store
        lifetime, lifetime_params = store.lifetime_filter()
        life = _numbers(store.totals(lifetime, lifetime_params)[0])
        errors = store.errors(lifetime, lifetime_params).get("", {})
        live = store.seconds(now - LIVE_WINDOW_SECONDS)
        recent = store.seconds(now - 10)
        samples = store.samples(since=now - LIVE_WINDOW_SECONDS)
        lifetime_providers = {row["name"]: row for row in store.totals(lifetime, lifetime_params, group_by="provider")}
        health, provider_health = self._health(now)
        providers = {}
        for name, row in lifetime_providers.items():
            if name == "-":
                continue
            providers[name] = {"requests": int(row["requests"]), "errors": int(row["errors"]),
                               **provider_health.get(name, {"health": 100, "status": "healthy"})}
        lookups = life["cache_hits"] + life["cache_misses"]
        snapshot = {
            "ts": round(now, 3),
            "uptime_s": round(now - (self._state("started_at") or now), 3),
            "totals": {**{name: life[name] for name in _COUNTERS}, "failures": life["failures"],
                       "streams": life["streams"], "failovers": life["failovers"], "cost_usd": life["cost_usd"],
                       "cache_bytes_saved": life["cache_bytes_saved"],
                       "cache_tokens_saved": life["cache_tokens_saved"],
                       "kv_writes_avoided": life["kv_writes_avoided"], "shed": life["shed"]},
            "operational_events": store.event_counts(),
            "error_rate": round(life["errors"] / life["requests"], 4) if life["requests"] else 0.0,
            "cache_hit_rate": round(life["cache_hits"] / lookups, 4) if lookups else None,
            "rps_1m": round(live["requests"] / LIVE_WINDOW_SECONDS, 3),
            "rps_10s": round(recent["requests"] / 10, 3),
            "live": {
                "window_s": LIVE_WINDOW_SECONDS, **live,
                "error_rate": _rate(live["errors"], live["requests"]),
                "failure_rate": _rate(live["failures"], live["requests"]),
                "cache_hit_rate": _rate(live["cache_hits"], live["cache_hits"] + live["cache_misses"]),
            },
            "latency_ms": self._latency(samples, "total_ms", with_avg=True),
            "upstream_ms": self._latency(samples, "upstream_ms"),
            "overhead_ms": self._latency(samples, "overhead_ms"),
            "ttft_ms": self._latency(samples, "ttft_ms"),
            "errors_by_class": errors,
            "providers": providers,
            "health": health,
            "subscribers": self._broadcaster.subscriber_count(),
        }
        process = self._process()
        if process:
            snapshot["process"] = process
        return snapshot

    def _process(self) -> dict[str, float] | None:
        if self._host_stats is None:
            return None
        try:
            return self._host_stats.sample()
        except Exception:
            log.debug("host stats unavailable", exc_info=True)
            return None

    @staticmethod
    def _latency(samples: list[dict[str, Any]], column: str, with_avg: bool = False) -> dict[str, Any]:
        values = sorted(s[column] for s in samples if s[column] is not None)
        block: dict[str, Any] = {}
        if with_avg:
            block["avg"] = round(sum(values) / len(values), 3) if values else None
        block.update({"p50": percentile(values, 0.50), "p95": percentile(values, 0.95),
                      "p99": percentile(values, 0.99), "max": round(values[-1], 3) if values else None,
                      "samples": len(values)})
        return block

    def _health(self, now: float) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        since = math.floor((now - HEALTH_WINDOW_SECONDS) / MINUTE) * MINUTE
        rows = self._store.totals("resolution = ? AND bucket >= ?", [MINUTE, since], group_by="provider")
        samples = self._store.samples(since=now - HEALTH_WINDOW_SECONDS)

        def p95(provider: str | None) -> float | None:
            values = sorted(s["ttft_ms"] if s["ttft_ms"] is not None else s["total_ms"]
                            for s in samples if provider is None or s["provider"] == provider)
            return percentile(values, 0.95)

        def score(rows_: list[dict[str, Any]], provider: str | None) -> dict[str, Any]:
            total = {c: sum(r[c] for r in rows_) for c in ("requests", "failures", "attempts", "attempt_failures")}
            return health_score(int(total["requests"]), int(total["failures"]), p95(provider),
                                self._latency_target_ms, int(total["attempts"]), int(total["attempt_failures"]))

        overall = score(rows, None)
        per_provider = {}
        for row in rows:
            if row["name"] == "-":
                continue
            detail = score([row], row["name"])
            per_provider[row["name"]] = {"health": detail["score"], "status": detail["status"],
                                         "availability": detail["availability"],
                                         "failure_rate": detail["failure_rate"], "p95_ms": detail["p95_ms"]}
        return overall, per_provider

    def health_summary(self) -> dict[str, Any]:
        """What /health shows: the cached score and, where known, this process's memory."""
        summary: dict[str, Any] = {"health": self.health()}
        if self.exporters is not None:
            summary["exporters"] = self.exporters.status()
        process = self._process()
        if process:
            summary["process"] = process
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
        now = self._clock.now()
        names = [window] if window in WINDOWS else list(WINDOWS)
        health, provider_health = self._health(now)
        return {
            "ts": round(now, 3),
            "windows": {name: self._window(name, now) for name in names},
            "where_the_time_goes": where_the_time_goes(self._store.samples(phases=True)),
            "health": {**health, "providers": provider_health},
            "recent_events": self._events.recent(),
        }

    def _window(self, name: str, now: float) -> dict[str, Any]:
        span, step = WINDOWS[name]
        store = self._store
        start = math.floor((now - span) / step) * step  # whole buckets: the first one may be partial
        where, params = store.window_filter(start, now)
        total = store.totals(where, params)[0]
        histograms = store.histograms(where, params)
        errors = store.errors(where, params)
        summary = self._summary(total, histograms.get("", {}), errors.get("", {}), span)
        for dimension, column in (("provider", "provider"), ("model", "model"), ("key", "key_id")):
            group_hist = store.histograms(where, params, column)
            group_errors = store.errors(where, params, column)
            summary[f"by_{dimension}"] = {
                row["name"]: self._summary(row, group_hist.get(row["name"], {}), group_errors.get(row["name"], {}), span)
                for row in store.totals(where, params, group_by=column)
            }
        summary["by_tag"] = store.tag_totals(start)  # request tags (x-flaregate-metadata)
        summary["series"] = [
            {"t": int(row["t"]), "requests": int(row["requests"]), "errors": int(row["errors"]),
             "failures": int(row["failures"]), "cache_hits": int(row["cache_hits"]),
             "cache_misses": int(row["cache_misses"]), "rate_limited": int(row["rate_limited"]),
             "avg_ms": round(row["latency_sum_ms"] / row["requests"], 3) if row["requests"] else None,
             "tokens_in": int(row["tokens_in"]), "tokens_out": int(row["tokens_out"]),
             "cost_usd": round(row["cost_usd"], 6)}
            for row in store.series(where, params, step)
        ]
        return {"window": name, "start": start, "end": round(now, 3), "resolution_s": step,
                **summary}

    @staticmethod
    def _summary(row: dict[str, Any], histograms: dict[str, dict[int, int]], errors: dict[str, int],
                 span: float) -> dict[str, Any]:
        n = _numbers(row)
        sums = {"total": n["latency_sum_ms"], "upstream": n["upstream_sum_ms"],
                "overhead": n["overhead_sum_ms"], "ttft": n["ttft_sum_ms"]}
        latency = {}
        for metric in METRICS:
            counts = histograms.get(metric, {})
            count = sum(counts.values())
            latency[metric] = {"count": count, "avg": round(sums[metric] / count, 3) if count else None,
                               "p50": quantile(counts, 0.50), "p95": quantile(counts, 0.95),
                               "p99": quantile(counts, 0.99)}
        return {
            **{c: n[c] for c in ("requests", "errors", "failures", "cache_hits", "cache_misses", "rate_limited",
                                 "streams", "failovers", "attempts", "attempt_failures", "tokens_in",
                                 "tokens_out", "cost_usd", "cache_bytes_saved", "cache_tokens_saved")},
            "rps": round(n["requests"] / span, 4),
            "error_rate": _rate(n["errors"], n["requests"]),
            "failure_rate": _rate(n["failures"], n["requests"]),
            "cache_hit_rate": _rate(n["cache_hits"], n["cache_hits"] + n["cache_misses"]),
            "availability": _rate(n["attempts"] - n["attempt_failures"], n["attempts"]),
            "latency_ms": latency,
            "errors_by_class": errors,
        }

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
