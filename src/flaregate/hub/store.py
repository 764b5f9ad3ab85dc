"""The metrics hub's SQL storage: aggregation, retention rollups and window queries.

Tables (all over the SQL-storage port, the same on a Durable Object and on sqlite3):

* ``hub_rollup``: counters per (resolution, bucket, provider, model, key). Resolution 60
  rows are written by ingest; 3600 and 86400 rows only by :meth:`HubStore.compact`;
  resolution 0 (bucket 0) holds lifetime totals up to the rolled-hour watermark, so
  lifetime = those rows + the minute rows not rolled yet (monotonic Prometheus counters
  at the cost of one write per event, not two).
* ``hub_histogram``: latency bucket counts with the same keys plus (metric, le index).
* ``hub_error``: error counts with the same keys plus the error class.
* ``hub_second``: per-second counts of the last few minutes, for live rates.
* ``hub_sample``: the most recent request samples, for exact live percentiles and the
  "where the time goes" view.

Retention: minute rows for 1 hour, hourly rows for 24 hours, daily rows for 30 days.
Compaction rolls each *completed* hour into an hourly row exactly once (a watermark in
``hub_state`` records how far it got) and each completed day into a daily row, then
deletes expired rows. Ingest never writes into an hour already rolled up: an event that
arrives late is counted in the first open minute instead, so nothing is lost or doubled.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from ..observability.error_classes import ERROR_CLASSES, SERVER_SIDE, classify
from ..ports import SqlStorage
from .histogram import INF_INDEX, METRICS, bucket_index

MINUTE, HOUR, DAY = 60, 3600, 86400
LIFETIME = 0
RETENTION_SECONDS = {MINUTE: HOUR, HOUR: DAY, DAY: 365 * DAY}  # daily rows: the 1-year archive
SECOND_ROWS_KEPT = 300
SAMPLES_KEPT = 1000
# The largest integer JavaScript holds exactly: a bigger Python int would cross into a
# Durable Object's sql.exec as a BigInt, which it rejects.
_FAR_FUTURE = 2**53 - 1

INT_COUNTERS = (
    "requests", "errors", "failures", "cache_hits", "cache_misses", "rate_limited", "streams",
    "failovers", "attempts", "attempt_failures", "tokens_in", "tokens_out", "ttft_count",
    "cache_bytes_saved", "cache_tokens_saved",  # answers served from the cache or a shared flight
    "kv_writes_avoided", "shed",  # cached answers KV never had to store; requests shed (overload)
)
SUM_COUNTERS = ("cost_usd", "latency_sum_ms", "upstream_sum_ms", "overhead_sum_ms", "ttft_sum_ms")
COUNTERS = INT_COUNTERS + SUM_COUNTERS
TAG_COUNTERS = ("requests", "errors", "tokens_in", "tokens_out", "cost_usd", "latency_sum_ms")
TAG_ROWS_KEPT_SECONDS = 7 * 86_400
# Spend report dimensions beside provider/model/key: the key's team ("team") and the tags
# the operator lists (REPORT_TAGS, "tag:NAME"); rolled up and kept like hub_rollup (a year).
SPEND_COUNTERS = ("requests", "errors", "tokens_in", "tokens_out", "cost_usd", "cache_hits",
                  "cache_tokens_saved", "cache_bytes_saved")
_MAX_DIMENSIONS = 9  # a team and at most 8 listed tags per event
_KEYS = "resolution, bucket, provider, model, key_id"
# Counters added after hub_rollup was first created: ALTER TABLE adds them to older tables.
_ADDED_COUNTERS = ("cache_bytes_saved", "cache_tokens_saved", "kv_writes_avoided", "shed")
# The totals of the first hub's table (hub_minute), carried into lifetime rows once.
_LEGACY_COUNTERS = ("requests", "errors", "cache_hits", "cache_misses", "rate_limited", "tokens_in",
                    "tokens_out", "latency_sum_ms", "cache_bytes_saved", "cache_tokens_saved")

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hub_rollup (resolution INTEGER NOT NULL, bucket INTEGER NOT NULL,"
    " provider TEXT NOT NULL, model TEXT NOT NULL, key_id TEXT NOT NULL, "
    + ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in INT_COUNTERS) + ", "
    + ", ".join(f"{c} REAL NOT NULL DEFAULT 0" for c in SUM_COUNTERS)
    + f", PRIMARY KEY ({_KEYS}))",
    "CREATE TABLE IF NOT EXISTS hub_histogram (resolution INTEGER NOT NULL, bucket INTEGER NOT NULL,"
    " provider TEXT NOT NULL, model TEXT NOT NULL, key_id TEXT NOT NULL, metric TEXT NOT NULL,"
    f" le INTEGER NOT NULL, count INTEGER NOT NULL, PRIMARY KEY ({_KEYS}, metric, le))",
    "CREATE TABLE IF NOT EXISTS hub_error (resolution INTEGER NOT NULL, bucket INTEGER NOT NULL,"
    " provider TEXT NOT NULL, model TEXT NOT NULL, key_id TEXT NOT NULL, class TEXT NOT NULL,"
    f" count INTEGER NOT NULL, PRIMARY KEY ({_KEYS}, class))",
    "CREATE TABLE IF NOT EXISTS hub_second (second INTEGER PRIMARY KEY, requests INTEGER NOT NULL,"
    " errors INTEGER NOT NULL, failures INTEGER NOT NULL, cache_hits INTEGER NOT NULL,"
    " cache_misses INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hub_sample (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,"
    " provider TEXT NOT NULL, model TEXT NOT NULL, total_ms REAL NOT NULL, upstream_ms REAL,"
    " overhead_ms REAL, ttft_ms REAL, phases TEXT)",
    "CREATE TABLE IF NOT EXISTS hub_state (name TEXT PRIMARY KEY, value REAL)",
    # Request tags (issue 18): minute rows per (tag, value), kept TAG_ROWS_KEPT_SECONDS.
    # Lifetime requests per allow-listed tag (the event's ``metric_tags``), for /metrics labels.
    "CREATE TABLE IF NOT EXISTS hub_tag_total (tag TEXT NOT NULL, value TEXT NOT NULL, requests INTEGER NOT NULL,"
    " errors INTEGER NOT NULL, PRIMARY KEY (tag, value))",
    "CREATE TABLE IF NOT EXISTS hub_tag (bucket INTEGER NOT NULL, tag TEXT NOT NULL, value TEXT NOT NULL, "
    + ", ".join(f"{c} REAL NOT NULL DEFAULT 0" for c in TAG_COUNTERS) + ", PRIMARY KEY (bucket, tag, value))",
    "CREATE TABLE IF NOT EXISTS hub_dimension (resolution INTEGER NOT NULL, bucket INTEGER NOT NULL,"
    " dimension TEXT NOT NULL, value TEXT NOT NULL, "
    + ", ".join(f"{c} REAL NOT NULL DEFAULT 0" for c in SPEND_COUNTERS)
    + ", PRIMARY KEY (resolution, bucket, dimension, value))",
)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def label(value: Any) -> str:
    return value[:100] if isinstance(value, str) and value else "-"


def _phases(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {k[:32]: round(v, 3) for k, v in list(value.items())[:20]
            if isinstance(k, str) and _num(v) is not None}


class ParsedEvent:
    """One request event, validated and reduced to what the hub stores."""

    __slots__ = ("ts", "provider", "model", "key", "counts", "error_class", "latencies", "attempts",
                 "phases", "raw", "dimensions")

    def __init__(self, event: dict[str, Any], ts: float) -> None:
        self.raw = event
        self.ts = ts
        self.model = label(event.get("model"))
        self.key = label(event.get("key_id"))
        attempts = event.get("upstream_attempts")
        self.attempts: list[tuple[str, bool]] = [
            (label(a[0]), bool(a[1])) for a in (attempts if isinstance(attempts, list) else [])[:10]
            if isinstance(a, list | tuple) and len(a) == 2
        ]
        provider = event.get("provider")
        if not provider and self.attempts:  # a request every target failed: blame the last one
            provider = self.attempts[-1][0]
        self.provider = label(provider)
        status = _int(event.get("status"))
        error_class = event.get("error_class")
        self.error_class = error_class if error_class in ERROR_CLASSES else classify(event)
        cache = event.get("cache")
        total = _num(event.get("latency_ms"))
        upstream = _num(event.get("upstream_ms"))
        overhead = _num(event.get("overhead_ms"))
        if overhead is None and total is not None:
            overhead = max(0.0, total - (upstream or 0.0))
        ttft = _num(event.get("ttft_ms"))
        self.latencies = {"total": total, "upstream": upstream, "overhead": overhead, "ttft": ttft}
        self.phases = _phases(event.get("phases"))
        dimensions = [("team", label(event["team_id"]))] if event.get("team_id") else []
        report_tags = event.get("report_tags")
        if isinstance(report_tags, dict):
            dimensions += [("tag:" + label(tag)[:64], label(value)) for tag, value in report_tags.items()]
        self.dimensions = dimensions[:_MAX_DIMENSIONS]
        self.counts: dict[str, float] = {
            "requests": 1,
            "errors": 1 if status >= 400 or self.error_class == "stream_error" else 0,
            "failures": 1 if self.error_class in SERVER_SIDE else 0,
            "cache_hits": 1 if cache == "HIT" else 0,
            "cache_misses": 1 if cache == "MISS" else 0,
            "rate_limited": 1 if self.error_class == "rate_limited" else 0,
            "streams": 1 if event.get("stream") is True else 0,
            # A retry of the same provider is no failover: another provider must have been tried.
            "failovers": 1 if len({provider for provider, _ in self.attempts}) > 1 else 0,
            "tokens_in": _int(event.get("tokens_in")),
            "tokens_out": _int(event.get("tokens_out")),
            "ttft_count": 1 if ttft is not None else 0,
            "cache_bytes_saved": _int(event.get("bytes_saved")),
            "cache_tokens_saved": _int(event.get("tokens_saved")),
            "kv_writes_avoided": 1 if event.get("kv_write_avoided") is True else 0,
            "shed": 1 if event.get("shed") is True else 0,
            "cost_usd": _num(event.get("cost_usd")) or 0.0,
            "latency_sum_ms": total or 0.0,
            "upstream_sum_ms": upstream or 0.0,
            "overhead_sum_ms": overhead or 0.0,
            "ttft_sum_ms": ttft or 0.0,
        }


class HubStore:
    def __init__(self, sql: SqlStorage) -> None:
        self.sql = sql
        for statement in SCHEMA:
            sql.exec(statement)
        self._add_columns()
        self._migrate_hub_minute()

    def _columns(self, table: str) -> set[str] | None:
        try:
            return {row["name"] for row in self.sql.exec(f"PRAGMA table_info({table})")}
        except Exception:  # a store without this PRAGMA
            return None

    def _add_columns(self) -> None:
        existing = self._columns("hub_rollup")
        for column in _ADDED_COUNTERS:
            if existing is None or column not in existing:
                with contextlib.suppress(Exception):  # already there
                    self.sql.exec(f"ALTER TABLE hub_rollup ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")

    def _migrate_hub_minute(self) -> None:
        """A hub upgraded from the first schema keeps its totals: hub_minute's rows become
        lifetime rows (key "-"), then the old tables go, in one transaction."""
        legacy = self._columns("hub_minute")
        if not legacy:
            return
        carried = [c for c in _LEGACY_COUNTERS if c in legacy]

        def migrate() -> None:
            self.sql.exec(
                f"INSERT INTO hub_rollup ({_KEYS}, {', '.join(carried)})"
                f" SELECT {LIFETIME}, 0, provider, model, '-', {', '.join(f'SUM({c})' for c in carried)}"
                " FROM hub_minute GROUP BY provider, model"
                f" ON CONFLICT({_KEYS}) DO UPDATE SET " + ", ".join(f"{c} = {c} + excluded.{c}" for c in carried),
            )
            self.sql.exec("DROP TABLE hub_minute")
            self.sql.exec("DROP TABLE IF EXISTS hub_latency")

        self.atomically(migrate)

    # -- small state ---------------------------------------------------------------------
    def state(self, name: str) -> float | None:
        rows = self.sql.exec("SELECT value FROM hub_state WHERE name = ?", name)
        return rows[0]["value"] if rows else None

    def set_state(self, name: str, value: float | None) -> None:
        self.sql.exec(
            "INSERT INTO hub_state (name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            name, value,
        )

    def ensure_watermarks(self, now: float) -> None:
        if self.state("rolled_hour") is None:
            self.set_state("rolled_hour", math.floor(now / HOUR) * HOUR)
        if self.state("rolled_day") is None:
            self.set_state("rolled_day", math.floor(now / DAY) * DAY)

    def watermarks(self) -> tuple[int, int]:
        return int(self.state("rolled_hour") or 0), int(self.state("rolled_day") or 0)

    # -- ingest --------------------------------------------------------------------------
    def parse(self, events: Iterable[Any], now: float) -> list[ParsedEvent]:
        rolled_hour, _ = self.watermarks()
        parsed = []
        for event in events:
            if not isinstance(event, dict):
                continue
            ts = _num(event.get("ts"))
            ts = now if ts is None else min(ts, now)
            parsed.append(ParsedEvent(event, max(ts, rolled_hour)))  # late: first open minute
        return parsed

    def atomically(self, work: Callable[[], None]) -> None:
        """Run ``work`` as one transaction where the storage offers one (optional port
        extras): ``transaction_sync(work)`` on a Durable Object (``transactionSync``),
        ``with transaction()`` on sqlite3. Without either, plain calls."""
        run = getattr(self.sql, "transaction_sync", None)
        if run is not None:
            run(work)
            return
        transaction = getattr(self.sql, "transaction", None)
        with transaction() if transaction is not None else contextlib.nullcontext():
            work()

    def ingest(self, events: list[ParsedEvent], now: float) -> None:
        """Fold parsed events into the rollups; the caller runs it inside :meth:`atomically`."""
        rows: dict[tuple, dict[str, float]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
        histogram: dict[tuple, int] = defaultdict(int)
        errors: dict[tuple, int] = defaultdict(int)
        for event in events:
            minute = int(event.ts // MINUTE) * MINUTE
            key = (minute, event.provider, event.model, event.key)
            row = rows[key]
            for name, value in event.counts.items():
                row[name] += value
            for provider, ok in event.attempts:
                attempt_row = rows[(minute, provider, event.model, event.key)]
                attempt_row["attempts"] += 1
                attempt_row["attempt_failures"] += 0 if ok else 1
            for metric in METRICS:
                ms = event.latencies[metric]
                if ms is not None:
                    histogram[(*key, metric, bucket_index(ms))] += 1
            if event.error_class:
                errors[(*key, event.error_class)] += 1
        for (minute, *labels), counters in rows.items():
            self.sql.exec(
                f"INSERT INTO hub_rollup ({_KEYS}, {', '.join(COUNTERS)})"
                f" VALUES (?, ?, ?, ?, ?, {', '.join('?' for _ in COUNTERS)})"
                f" ON CONFLICT({_KEYS}) DO UPDATE SET "
                + ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTERS),
                MINUTE, minute, *labels, *(counters[c] for c in COUNTERS),
            )
        for (minute, *labels, metric, le), count in histogram.items():
            self.sql.exec(
                f"INSERT INTO hub_histogram ({_KEYS}, metric, le, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                f" ON CONFLICT({_KEYS}, metric, le) DO UPDATE SET count = count + excluded.count",
                MINUTE, minute, *labels, metric, le, count,
            )
        for (minute, *labels, error_class), count in errors.items():
            self.sql.exec(
                f"INSERT INTO hub_error ({_KEYS}, class, count) VALUES (?, ?, ?, ?, ?, ?, ?)"
                f" ON CONFLICT({_KEYS}, class) DO UPDATE SET count = count + excluded.count",
                MINUTE, minute, *labels, error_class, count,
            )
        self._ingest_tags(events, now)
        self._ingest_dimensions(events)
        self._ingest_live(events, now)

    def _ingest_dimensions(self, events: list[ParsedEvent]) -> None:
        rows: dict[tuple[int, str, str], dict[str, float]] = defaultdict(lambda: dict.fromkeys(SPEND_COUNTERS, 0))
        for event in events:
            if not event.dimensions:
                continue
            minute = int(event.ts // MINUTE) * MINUTE
            for dimension, value in event.dimensions:
                row = rows[(minute, dimension, value)]
                for name in SPEND_COUNTERS:
                    row[name] += event.counts.get(name, 0)
        for (minute, dimension, value), counters in rows.items():
            self.sql.exec(
                f"INSERT INTO hub_dimension (resolution, bucket, dimension, value, {', '.join(SPEND_COUNTERS)})"
                f" VALUES (?, ?, ?, ?, {', '.join('?' for _ in SPEND_COUNTERS)})"
                " ON CONFLICT(resolution, bucket, dimension, value) DO UPDATE SET "
                + ", ".join(f"{c} = {c} + excluded.{c}" for c in SPEND_COUNTERS),
                MINUTE, minute, dimension, value, *(counters[c] for c in SPEND_COUNTERS))

    def dimension_totals(self, where: str, params: list[Any],
                         rounded: bool = True) -> dict[str, dict[str, dict[str, float]]]:
        """{dimension: {value: spend counters}} over a window (``window_filter``'s clause;
        unrounded: parts added to other shards' before they are shown)."""
        rows = self.sql.exec(
            "SELECT dimension, value, " + ", ".join(f"SUM({c}) AS {c}" for c in SPEND_COUNTERS)
            + f" FROM hub_dimension WHERE {where} GROUP BY dimension, value ORDER BY dimension, value", *params)
        out: dict[str, dict[str, dict[str, float]]] = {}
        for row in rows:
            out.setdefault(row["dimension"], {})[row["value"]] = {
                c: (round(float(row[c] or 0), 9) if rounded else float(row[c] or 0)) if c == "cost_usd"
                else int(row[c] or 0) for c in SPEND_COUNTERS}
        return out

    def _ingest_tags(self, events: list[ParsedEvent], now: float) -> None:
        rows: dict[tuple[int, str, str], dict[str, float]] = defaultdict(lambda: dict.fromkeys(TAG_COUNTERS, 0))
        for event in events:
            tags = event.raw.get("tags")
            if not isinstance(tags, dict):
                continue
            minute = int(event.ts // MINUTE) * MINUTE
            for tag, value in list(tags.items())[:8]:
                row = rows[(minute, label(tag), label(value))]
                for name in TAG_COUNTERS:
                    row[name] += event.counts.get(name, 0)
        for (minute, tag, value), counters in rows.items():
            self.sql.exec(
                f"INSERT INTO hub_tag (bucket, tag, value, {', '.join(TAG_COUNTERS)}) VALUES (?, ?, ?, "
                + ", ".join("?" for _ in TAG_COUNTERS) + ") ON CONFLICT(bucket, tag, value) DO UPDATE SET "
                + ", ".join(f"{c} = {c} + excluded.{c}" for c in TAG_COUNTERS),
                minute, tag, value, *(counters[c] for c in TAG_COUNTERS))
        if rows:
            self.sql.exec("DELETE FROM hub_tag WHERE bucket < ?", int(now) - TAG_ROWS_KEPT_SECONDS)
        totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for event in events:
            metric_tags = event.raw.get("metric_tags")
            for tag, value in list(metric_tags.items())[:8] if isinstance(metric_tags, dict) else []:
                total = totals[(label(tag), label(value))]
                total[0] += 1
                total[1] += int(event.counts.get("errors", 0))
        for (tag, value), (requests, errors) in totals.items():
            self.sql.exec("INSERT INTO hub_tag_total (tag, value, requests, errors) VALUES (?, ?, ?, ?)"
                          " ON CONFLICT(tag, value) DO UPDATE SET requests = requests + excluded.requests,"
                          " errors = errors + excluded.errors", tag, value, requests, errors)

    def tag_totals(self, since: float, rounded: bool = True) -> dict[str, dict[str, dict[str, float]]]:
        """{tag: {value: counters}} over the minute rows since ``since`` (unrounded: parts
        that are added to other shards' before they are shown)."""
        rows = self.sql.exec(
            "SELECT tag, value, " + ", ".join(f"SUM({c}) AS {c}" for c in TAG_COUNTERS)
            + " FROM hub_tag WHERE bucket >= ? GROUP BY tag, value ORDER BY tag, value", int(since))
        out: dict[str, dict[str, dict[str, float]]] = {}
        for row in rows:
            out.setdefault(row["tag"], {})[row["value"]] = {
                c: round(float(row[c] or 0), 6) if rounded else float(row[c] or 0) for c in TAG_COUNTERS}
        return out

    def _ingest_live(self, events: list[ParsedEvent], now: float) -> None:
        second = int(now)
        sums = {name: int(sum(e.counts[name] for e in events))
                for name in ("requests", "errors", "failures", "cache_hits", "cache_misses")}
        self.sql.exec(
            "INSERT INTO hub_second (second, requests, errors, failures, cache_hits, cache_misses)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(second) DO UPDATE SET"
            " requests = requests + excluded.requests, errors = errors + excluded.errors,"
            " failures = failures + excluded.failures, cache_hits = cache_hits + excluded.cache_hits,"
            " cache_misses = cache_misses + excluded.cache_misses",
            second, *sums.values(),
        )
        self.sql.exec("DELETE FROM hub_second WHERE second < ?", second - SECOND_ROWS_KEPT)
        samples = [e for e in events if e.latencies["total"] is not None][-SAMPLES_KEPT:]
        per_statement = 10  # 9 values a row: stays under a 100-parameter statement limit
        for start in range(0, len(samples), per_statement):
            chunk = samples[start:start + per_statement]
            params: list[Any] = []
            for e in chunk:
                lat = e.latencies
                params += [e.ts, e.provider, e.model, lat["total"], lat["upstream"], lat["overhead"],
                           lat["ttft"], json.dumps(e.phases, separators=(",", ":")) if e.phases else None]
            self.sql.exec(
                "INSERT INTO hub_sample (ts, provider, model, total_ms, upstream_ms, overhead_ms, ttft_ms, phases)"
                " VALUES " + ", ".join("(?, ?, ?, ?, ?, ?, ?, ?)" for _ in chunk),
                *params,
            )
        if samples:
            self.sql.exec("DELETE FROM hub_sample WHERE id <= (SELECT MAX(id) FROM hub_sample) - ?", SAMPLES_KEPT)

    # -- retention -----------------------------------------------------------------------
    def compact(self, now: float) -> dict[str, int]:
        """Roll completed hours and days up, then delete expired rows. Idempotent."""
        self.ensure_watermarks(now)
        rolled_hour, rolled_day = self.watermarks()
        hour_end = math.floor(now / HOUR) * HOUR
        day_end = math.floor(now / DAY) * DAY
        report = {"hours_rolled": 0, "days_rolled": 0, "deleted": 0}
        if hour_end > rolled_hour:
            report["hours_rolled"] = (hour_end - rolled_hour) // HOUR
            def roll_hours() -> None:  # the lifetime view must never see the hour twice or not at all
                self._roll(MINUTE, HOUR, rolled_hour, hour_end)
                self._roll(MINUTE, LIFETIME, rolled_hour, hour_end)
                self.set_state("rolled_hour", hour_end)

            self.atomically(roll_hours)
        if day_end > rolled_day:
            report["days_rolled"] = (day_end - rolled_day) // DAY
            self._roll(HOUR, DAY, rolled_day, day_end)
            self.set_state("rolled_day", day_end)
        for resolution, keep in RETENTION_SECONDS.items():
            cutoff = now - keep - resolution  # a row expires once its whole period is older
            for table in ("hub_rollup", "hub_histogram", "hub_error", "hub_dimension"):
                before = self._count(table, resolution)
                self.sql.exec(f"DELETE FROM {table} WHERE resolution = ? AND bucket < ?", resolution, cutoff)
                report["deleted"] += before - self._count(table, resolution)
        self.sql.exec("DELETE FROM hub_second WHERE second < ?", int(now) - SECOND_ROWS_KEPT)
        return report

    def _count(self, table: str, resolution: int) -> int:
        return self.sql.exec(f"SELECT COUNT(*) AS n FROM {table} WHERE resolution = ?", resolution)[0]["n"]

    def _roll(self, source: int, target: int, start: int, end: int) -> None:
        bucket = f"(bucket / {target}) * {target}" if target else "0"
        by_bucket = f"{bucket}, " if target else ""  # a bare 0 in GROUP BY would mean column 0
        where = "WHERE resolution = ? AND bucket >= ? AND bucket < ?"
        sums = ", ".join(f"SUM({c})" for c in COUNTERS)
        self.sql.exec(
            f"INSERT INTO hub_rollup ({_KEYS}, {', '.join(COUNTERS)})"
            f" SELECT {target}, {bucket}, provider, model, key_id, {sums} FROM hub_rollup {where}"
            f" GROUP BY {by_bucket}provider, model, key_id"
            f" ON CONFLICT({_KEYS}) DO UPDATE SET " + ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTERS),
            source, start, end,
        )
        if target:  # spend dimensions: hours and days (no lifetime rows: reports are windowed)
            sums = ", ".join(f"SUM({c})" for c in SPEND_COUNTERS)
            self.sql.exec(
                f"INSERT INTO hub_dimension (resolution, bucket, dimension, value, {', '.join(SPEND_COUNTERS)})"
                f" SELECT {target}, {bucket}, dimension, value, {sums} FROM hub_dimension {where}"
                f" GROUP BY {by_bucket}dimension, value"
                " ON CONFLICT(resolution, bucket, dimension, value) DO UPDATE SET "
                + ", ".join(f"{c} = {c} + excluded.{c}" for c in SPEND_COUNTERS),
                source, start, end,
            )
        for table, extra in (("hub_histogram", "metric, le"), ("hub_error", "class")):
            self.sql.exec(
                f"INSERT INTO {table} ({_KEYS}, {extra}, count)"
                f" SELECT {target}, {bucket}, provider, model, key_id, {extra}, SUM(count) FROM {table} {where}"
                f" GROUP BY {by_bucket}provider, model, key_id, {extra}"
                f" ON CONFLICT({_KEYS}, {extra}) DO UPDATE SET count = count + excluded.count",
                source, start, end,
            )

    def has_rows(self, resolution: int) -> bool:
        return bool(self.sql.exec("SELECT 1 AS x FROM hub_rollup WHERE resolution = ? LIMIT 1", resolution))

    # -- windows -------------------------------------------------------------------------
    def lifetime_filter(self) -> tuple[str, list[Any]]:
        """Everything since the hub started: lifetime rows plus minute rows not rolled yet."""
        rolled_hour, _ = self.watermarks()
        return "(resolution = ? OR (resolution = ? AND bucket >= ?))", [LIFETIME, MINUTE, rolled_hour]

    def window_filter(self, start: float, now: float) -> tuple[str, list[Any]]:
        """A WHERE clause covering [start, now] with each moment counted at one resolution:
        minute rows where they are authoritative, hourly and daily rows further back."""
        if start >= now - HOUR - MINUTE:  # minute rows still cover it
            return "(resolution = ? AND bucket >= ?)", [MINUTE, start]
        rolled_hour, rolled_day = self.watermarks()
        parts: list[tuple[int, float, float]] = []
        hour_from = start
        if start < now - DAY - HOUR:
            parts.append((DAY, start, rolled_day))
            hour_from = max(start, rolled_day)
        parts.append((HOUR, hour_from, rolled_hour))
        parts.append((MINUTE, max(start, rolled_hour), _FAR_FUTURE))
        clause = " OR ".join("(resolution = ? AND bucket >= ? AND bucket < ?)" for _ in parts)
        return f"({clause})", [value for part in parts for value in part]

    def totals(self, where: str, params: list[Any], group_by: str | None = None) -> list[dict[str, Any]]:
        sums = ", ".join(f"COALESCE(SUM({c}), 0) AS {c}" for c in COUNTERS)
        select = f"{group_by} AS name, " if group_by else ""
        tail = f" GROUP BY {group_by} ORDER BY {group_by}" if group_by else ""
        return self.sql.exec(f"SELECT {select}{sums} FROM hub_rollup WHERE {where}{tail}", *params)

    def count_event(self, kind: str) -> None:
        """An operational event (not a request) seen by the hub: counted in ``event:<kind>``."""
        self.sql.exec(
            "INSERT INTO hub_state (name, value) VALUES (?, 1)"
            " ON CONFLICT(name) DO UPDATE SET value = COALESCE(value, 0) + 1",
            "event:" + label(kind)[:64],
        )

    def event_counts(self) -> dict[str, int]:
        rows = self.sql.exec("SELECT name, value FROM hub_state WHERE name LIKE 'event:%' ORDER BY name")
        return {row["name"][6:]: int(row["value"] or 0) for row in rows}

    def series(self, where: str, params: list[Any], step: int) -> list[dict[str, Any]]:
        return self.sql.exec(
            f"SELECT (bucket / {step}) * {step} AS t, SUM(requests) AS requests, SUM(errors) AS errors,"
            " SUM(failures) AS failures, SUM(cache_hits) AS cache_hits, SUM(cache_misses) AS cache_misses,"
            " SUM(rate_limited) AS rate_limited, SUM(latency_sum_ms) AS latency_sum_ms,"
            " SUM(tokens_in) AS tokens_in, SUM(tokens_out) AS tokens_out, SUM(cost_usd) AS cost_usd"
            f" FROM hub_rollup WHERE {where} GROUP BY t ORDER BY t",
            *params,
        )

    def histograms(self, where: str, params: list[Any], group_by: str | None = None) -> dict[str, dict[str, dict[int, int]]]:
        """{group name or "": {metric: {le index: count}}}"""
        select = f"{group_by} AS name, " if group_by else "'' AS name, "
        group = f"{group_by}, " if group_by else ""
        result: dict[str, dict[str, dict[int, int]]] = {}
        for row in self.sql.exec(
            f"SELECT {select}metric, le, SUM(count) AS n FROM hub_histogram WHERE {where}"
            f" GROUP BY {group}metric, le", *params,
        ):
            le = min(int(row["le"]), INF_INDEX)
            result.setdefault(row["name"], {}).setdefault(row["metric"], {})[le] = int(row["n"])
        return result

    def errors(self, where: str, params: list[Any], group_by: str | None = None) -> dict[str, dict[str, int]]:
        select = f"{group_by} AS name, " if group_by else "'' AS name, "
        group = f"{group_by}, " if group_by else ""
        result: dict[str, dict[str, int]] = {}
        for row in self.sql.exec(
            f"SELECT {select}class, SUM(count) AS n FROM hub_error WHERE {where} GROUP BY {group}class", *params,
        ):
            result.setdefault(row["name"], {})[row["class"]] = int(row["n"])
        return result

    # -- live ----------------------------------------------------------------------------
    def seconds(self, since: float) -> dict[str, int]:
        row = self.sql.exec(
            "SELECT COALESCE(SUM(requests), 0) AS requests, COALESCE(SUM(errors), 0) AS errors,"
            " COALESCE(SUM(failures), 0) AS failures, COALESCE(SUM(cache_hits), 0) AS cache_hits,"
            " COALESCE(SUM(cache_misses), 0) AS cache_misses FROM hub_second WHERE second >= ?",
            int(since),
        )[0]
        return {name: int(value) for name, value in row.items()}

    def second_series(self, since: float) -> list[dict[str, Any]]:
        return self.sql.exec(
            "SELECT second AS t, requests, errors, failures, cache_hits, cache_misses FROM hub_second"
            " WHERE second >= ? ORDER BY second", int(since),
        )

    def samples(self, since: float | None = None, phases: bool = False) -> list[dict[str, Any]]:
        where, params = ("WHERE ts >= ?", [since]) if since is not None else ("", [])
        rows = self.sql.exec(
            "SELECT ts, provider, model, total_ms, upstream_ms, overhead_ms, ttft_ms"
            + (", phases" if phases else "") + f" FROM hub_sample {where} ORDER BY id", *params,
        )
        if phases:
            for row in rows:
                row["phases"] = json.loads(row["phases"]) if row["phases"] else {}
        return rows
