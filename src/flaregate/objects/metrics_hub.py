"""The metrics hub: aggregates request events in SQL and pushes metrics to subscribers.

State lives in SQL so a hibernated Durable Object loses nothing. Ticks are rate limited:
after traffic changes the metrics, subscribers get one ``metrics`` message no later than
``tick_seconds`` after the previous one (the host's scheduler wakes the hub).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..ports import Broadcaster, Clock, Scheduler, SqlStorage

PROTOCOL_VERSION = 1
LATENCY_SAMPLES = 1000  # recent latencies kept for percentiles
MAX_CLIENT_MESSAGE = 4096

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hub_minute ("
    " bucket INTEGER NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,"
    " requests INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0,"
    " cache_hits INTEGER NOT NULL DEFAULT 0, cache_misses INTEGER NOT NULL DEFAULT 0,"
    " rate_limited INTEGER NOT NULL DEFAULT 0, tokens_in INTEGER NOT NULL DEFAULT 0,"
    " tokens_out INTEGER NOT NULL DEFAULT 0, latency_sum_ms REAL NOT NULL DEFAULT 0,"
    " cache_bytes_saved INTEGER NOT NULL DEFAULT 0, cache_tokens_saved INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (bucket, provider, model))",
    "CREATE TABLE IF NOT EXISTS hub_latency ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, ms REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hub_state (name TEXT PRIMARY KEY, value REAL)",
)

_COUNTERS = ("requests", "errors", "cache_hits", "cache_misses", "rate_limited", "tokens_in", "tokens_out",
             "cache_bytes_saved", "cache_tokens_saved")
# Columns added after the first release, for hub tables created before them.
_ADDED_COLUMNS = ("cache_bytes_saved", "cache_tokens_saved")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _label(value: Any) -> str:
    return value[:100] if isinstance(value, str) and value else "-"


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return round(sorted_values[index], 3)


class MetricsHub:
    def __init__(
        self,
        sql: SqlStorage,
        clock: Clock,
        broadcaster: Broadcaster,
        scheduler: Scheduler,
        tick_seconds: float = 1.0,
    ) -> None:
        self._sql = sql
        self._clock = clock
        self._broadcaster = broadcaster
        self._scheduler = scheduler
        self._tick = tick_seconds
        for statement in SCHEMA:
            sql.exec(statement)
        self._add_columns()
        if self._state("started_at") is None:
            self._set_state("started_at", clock.now())

    def _add_columns(self) -> None:
        try:
            existing = {row["name"] for row in self._sql.exec("PRAGMA table_info(hub_minute)")}
        except Exception:  # a store without this PRAGMA: try each column
            existing = set()
        for column in _ADDED_COLUMNS:
            if column not in existing:
                try:
                    self._sql.exec(f"ALTER TABLE hub_minute ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
                except Exception:  # already there
                    pass

    # -- state helpers -------------------------------------------------------------------
    def _state(self, name: str) -> float | None:
        rows = self._sql.exec("SELECT value FROM hub_state WHERE name = ?", name)
        return rows[0]["value"] if rows else None

    def _set_state(self, name: str, value: float | None) -> None:
        self._sql.exec(
            "INSERT INTO hub_state (name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            name,
            value,
        )

    # -- ingest --------------------------------------------------------------------------
    async def record(self, events: list[dict[str, Any]]) -> int:
        """Aggregate request events; returns how many were accepted. Bad events are skipped.

        Events with a ``type`` other than ``request`` (e.g. ``ratelimit_degraded``, ``circuit``)
        are not requests: they are counted, in hub_state as ``event:<type>``, and relayed to
        the subscribers at once.
        """
        accepted = 0
        for event in events if isinstance(events, list) else []:
            if not isinstance(event, dict):
                continue
            kind = event.get("type", "request")
            if kind != "request":
                self._count_other(kind)
                self._relay_operational(event)  # circuit / cooldown / failover: as they happen
            elif self._record_one(event):
                accepted += 1
        if accepted:
            self._set_state("dirty", 1)
            await self._request_tick()
        return accepted

    def _relay_operational(self, event: dict[str, Any]) -> None:
        """Operational events go straight to the subscribers, as they happen."""
        if self._broadcaster.subscriber_count() and isinstance(event.get("type"), str):
            self._broadcaster.broadcast(json.dumps({**event, "protocol": PROTOCOL_VERSION}, default=str))

    def _count_other(self, kind: Any) -> None:
        self._sql.exec(
            "INSERT INTO hub_state (name, value) VALUES (?, 1)"
            " ON CONFLICT(name) DO UPDATE SET value = COALESCE(value, 0) + 1",
            "event:" + _label(kind),
        )

    def _record_one(self, event: dict[str, Any]) -> bool:
        ts = _num(event.get("ts")) or self._clock.now()
        bucket = int(ts // 60) * 60
        status = _int(event.get("status"))
        cache = event.get("cache")
        counts = {
            "requests": 1,
            "errors": 1 if status >= 400 or event.get("error") else 0,
            "cache_hits": 1 if cache == "HIT" else 0,
            "cache_misses": 1 if cache == "MISS" else 0,
            "rate_limited": 1 if status == 429 and event.get("rate_limited") else 0,
            "tokens_in": _int(event.get("tokens_in")),
            "tokens_out": _int(event.get("tokens_out")),
            "cache_bytes_saved": _int(event.get("bytes_saved")),
            "cache_tokens_saved": _int(event.get("tokens_saved")),
        }
        latency = _num(event.get("latency_ms"))
        self._sql.exec(
            "INSERT INTO hub_minute (bucket, provider, model, requests, errors, cache_hits,"
            " cache_misses, rate_limited, tokens_in, tokens_out, cache_bytes_saved, cache_tokens_saved,"
            " latency_sum_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(bucket, provider, model) DO UPDATE SET"
            " requests = requests + excluded.requests, errors = errors + excluded.errors,"
            " cache_hits = cache_hits + excluded.cache_hits,"
            " cache_misses = cache_misses + excluded.cache_misses,"
            " rate_limited = rate_limited + excluded.rate_limited,"
            " tokens_in = tokens_in + excluded.tokens_in,"
            " tokens_out = tokens_out + excluded.tokens_out,"
            " cache_bytes_saved = cache_bytes_saved + excluded.cache_bytes_saved,"
            " cache_tokens_saved = cache_tokens_saved + excluded.cache_tokens_saved,"
            " latency_sum_ms = latency_sum_ms + excluded.latency_sum_ms",
            bucket,
            _label(event.get("provider")),
            _label(event.get("model")),
            *(counts[name] for name in _COUNTERS),
            latency or 0.0,
        )
        if latency is not None:
            self._sql.exec("INSERT INTO hub_latency (ts, ms) VALUES (?, ?)", ts, latency)
            self._sql.exec(
                "DELETE FROM hub_latency WHERE id <= (SELECT MAX(id) FROM hub_latency) - ?",
                LATENCY_SAMPLES,
            )
        return True

    # -- ticks ---------------------------------------------------------------------------
    async def _request_tick(self) -> None:
        now = self._clock.now()
        pending = self._state("tick_at")
        if pending is not None and pending > now - 5 * self._tick:
            return  # one is already pending (an older one was lost, e.g. by a restart)
        last = self._state("last_broadcast") or 0.0
        at = max(now, last + self._tick)
        self._set_state("tick_at", at)
        await self._scheduler.schedule(at)

    async def alarm(self) -> None:
        """The scheduled wake-up: broadcast once if anything changed since the last tick."""
        self._set_state("tick_at", None)
        if not self._state("dirty"):
            return
        self._set_state("dirty", 0)
        self._set_state("last_broadcast", self._clock.now())
        if self._broadcaster.subscriber_count():
            self._broadcaster.broadcast(self.message("metrics"))

    # -- reads ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        now = self._clock.now()
        sums = ", ".join(f"COALESCE(SUM({name}), 0) AS {name}" for name in _COUNTERS)
        totals = self._sql.exec(f"SELECT {sums}, COALESCE(SUM(latency_sum_ms), 0) AS lat FROM hub_minute")[0]
        latencies = sorted(row["ms"] for row in self._sql.exec("SELECT ms FROM hub_latency"))
        recent = self._sql.exec("SELECT COUNT(*) AS n FROM hub_latency WHERE ts >= ?", now - 60)[0]["n"]
        providers: dict[str, dict[str, int]] = {}
        for row in self._sql.exec(
            "SELECT provider, SUM(requests) AS requests, SUM(errors) AS errors"
            " FROM hub_minute GROUP BY provider ORDER BY provider"
        ):
            providers[row["provider"]] = {"requests": row["requests"], "errors": row["errors"]}
        requests = int(totals["requests"])
        lookups = totals["cache_hits"] + totals["cache_misses"]
        return {
            "ts": round(now, 3),
            "uptime_s": round(now - (self._state("started_at") or now), 3),
            "totals": {name: int(totals[name]) for name in _COUNTERS},
            "error_rate": round(totals["errors"] / requests, 4) if requests else 0.0,
            "cache_hit_rate": round(totals["cache_hits"] / lookups, 4) if lookups else None,
            "rps_1m": round(recent / 60, 3),
            "latency_ms": {
                "avg": round(totals["lat"] / requests, 3) if requests else None,
                "p50": percentile(latencies, 0.50),
                "p95": percentile(latencies, 0.95),
                "p99": percentile(latencies, 0.99),
                "max": round(latencies[-1], 3) if latencies else None,
            },
            "providers": providers,
            "subscribers": self._broadcaster.subscriber_count(),
        }

    def message(self, kind: str) -> str:
        return json.dumps({"type": kind, "protocol": PROTOCOL_VERSION, "metrics": self.snapshot()})

    def welcome(self) -> str:
        """The first message a new subscriber receives."""
        return self.message("snapshot")

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
