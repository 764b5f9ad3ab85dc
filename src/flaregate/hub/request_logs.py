"""The request-log store: one record per API request plus the operational events, searchable.

Written once over the SQL-storage port: inside the metrics hub on both hosts (the Durable
Object's SQLite on the edge, the hub's sqlite file locally). The hub already receives every
request's analytics event in batches, so a record costs no extra hop and no work on the
request's path: the record *is* that event (``tags``, ``guardrails``, ``shed``, ``cache_tier``
are kept when other features add them).

Levels decide retention (the seed: debug 1 h, info 24 h, warn 7 d, error 30 d): each row
stores its own expiry, so :meth:`RequestLogStore.expire` is one bounded DELETE per run.

Records of requests refused before a key was known (401/403/429 without ``key_id``: bad or
missing keys, the failed-authentication throttle's 429) go to a bucket of their own, so a
flood of bad tokens can never evict real warnings or errors: such a row is numbered in
``unauth_seq`` (NULL for every other row), kept ``LOG_UNAUTHENTICATED_RETENTION_SECONDS``
(1 h) and, past ``LOG_UNAUTHENTICATED_MAX_RECORDS`` (10 000) rows, the bucket's oldest go
first (one indexed range DELETE per batch). Every other row is untouched by it.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..observability.error_classes import SERVER_SIDE
from ..observability.request_bodies import BODY_FIELDS
from ..ports import SqlStorage
from ..redaction import redact

LEVELS = ("debug", "info", "warn", "error")
DEFAULT_RETENTION_SECONDS: dict[str, float] = {
    "debug": 3600.0, "info": 86400.0, "warn": 7 * 86400.0, "error": 30 * 86400.0,
}
MAX_PAGE = 200  # the hard page limit, whatever ``limit`` asks for
EXPIRE_BATCH = 5000  # rows deleted per alarm / periodic run (bounded work)
MAX_RECORD_CHARS = 32_000  # one stored record; a bigger event keeps its columns only
UNAUTHENTICATED = "unauthenticated"  # the bucket (its retention key too)
UNAUTHENTICATED_MAX_RECORDS = 10_000
DEFAULT_UNAUTHENTICATED_SECONDS = 3600.0
_REFUSED_BEFORE_AUTH = frozenset({401, 403, 429})
# 403s of a key that was found (its route or model not allowed): that key's own warning.
_KNOWN_KEY_CODES = frozenset({"route_not_allowed", "model_not_allowed"})
_WARN_EVENTS = frozenset({"failover", "circuit", "cooldown", "ratelimit_degraded", "ratelimit_saturated",
                          "webhook_failed", "webhook_failure"})

_COLUMNS = ("request_id", "ts", "level", "expires", "trace_id", "key_id", "model", "provider", "status",
            "error_class", "cache", "stream", "attempts", "failovers", "tokens_in", "tokens_out",
            "cost_usd", "latency_ms", "message")
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS log_request (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " request_id TEXT NOT NULL, ts REAL NOT NULL, level TEXT NOT NULL, expires REAL NOT NULL,"
    " trace_id TEXT, key_id TEXT, model TEXT, provider TEXT, status INTEGER NOT NULL, error_class TEXT,"
    " cache TEXT, stream INTEGER, attempts INTEGER, failovers INTEGER, tokens_in INTEGER, tokens_out INTEGER,"
    " cost_usd REAL, latency_ms REAL, message TEXT, record TEXT NOT NULL, unauth_seq INTEGER)",
    "CREATE INDEX IF NOT EXISTS log_request_ts ON log_request (ts, seq)",
    "CREATE INDEX IF NOT EXISTS log_request_id ON log_request (request_id)",
    "CREATE INDEX IF NOT EXISTS log_request_expires ON log_request (expires)",
    "CREATE TABLE IF NOT EXISTS log_event (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,"
    " level TEXT NOT NULL, expires REAL NOT NULL, type TEXT NOT NULL, request_id TEXT, record TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS log_event_request ON log_event (request_id)",
    "CREATE INDEX IF NOT EXISTS log_event_expires ON log_event (expires)",
)
_UNAUTH_INDEX = ("CREATE INDEX IF NOT EXISTS log_request_unauth ON log_request (unauth_seq)"
                 " WHERE unauth_seq IS NOT NULL")
_INSERT = (f"INSERT INTO log_request ({', '.join(_COLUMNS)}, record, unauth_seq)"
           f" VALUES ({', '.join('?' for _ in _COLUMNS)}, ?, ?)")
_TEXT_FILTERS = ("model", "provider", "key_id", "cache", "error_class", "request_id", "trace_id", "level")


class LogQueryError(ValueError):
    """A bad filter or cursor: the endpoint answers 400 with this message."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def _text(value: Any, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = int(value)
    return number if -(2**53) < number < 2**53 else None  # a DO rejects JS BigInt


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def request_level(event: Mapping[str, Any]) -> str:
    """error: the gateway or a provider failed (5xx, server-side error class); warn: the
    client was refused (4xx) or the request needed a failover; info: everything else."""
    status = _int(event.get("status")) or 0
    if status >= 500 or event.get("error_class") in SERVER_SIDE:
        return "error"
    if status >= 400 or event.get("error_class") or (_int(event.get("failovers")) or 0) > 0:
        return "warn"
    level = event.get("level")
    return level if level in LEVELS else "info"


def unauthenticated(event: Mapping[str, Any]) -> bool:
    """Refused before any key was known: the unauthenticated bucket's record."""
    return (_int(event.get("status")) in _REFUSED_BEFORE_AUTH and not event.get("key_id")
            and event.get("error_code") not in _KNOWN_KEY_CODES)


def _message(event: Mapping[str, Any]) -> str | None:
    for key in ("error_message", "error", "message"):
        value = event.get(key)
        if isinstance(value, dict):
            value = value.get("message")
        if isinstance(value, str) and value:
            return value[:500]
    return None


def _cursor(ts: float, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{ts!r}:{seq}".encode()).decode().rstrip("=")


def _parse_cursor(text: str) -> tuple[float, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        ts, seq = raw.split(":")
        return float(ts), int(seq)
    except Exception:
        raise LogQueryError("Invalid cursor; pass next_cursor from the previous page.", "cursor") from None


class RequestLogStore:
    def __init__(self, sql: SqlStorage, retention_seconds: Mapping[str, float] | None = None,
                 secrets: Iterable[str] = (), unauthenticated_max_records: int = UNAUTHENTICATED_MAX_RECORDS) -> None:
        self._sql = sql
        self._secrets = [s for s in secrets if s]  # taken out of kept bodies (LOG_BODIES)
        self.retention = {**DEFAULT_RETENTION_SECONDS, UNAUTHENTICATED: DEFAULT_UNAUTHENTICATED_SECONDS,
                          **(retention_seconds or {})}
        self.unauthenticated_max_records = max(1, int(unauthenticated_max_records))
        for statement in SCHEMA:
            sql.exec(statement)
        self._add_unauth_column()
        sql.exec(_UNAUTH_INDEX)

    def _add_unauth_column(self) -> None:
        """A store made before the unauthenticated bucket gets its column (its rows stay as they were)."""
        try:
            columns = {row["name"] for row in self._sql.exec("PRAGMA table_info(log_request)")}
        except Exception:  # a store without this PRAGMA: try, and "duplicate column" means done
            columns = set()
        if "unauth_seq" not in columns:
            with contextlib.suppress(Exception):
                self._sql.exec("ALTER TABLE log_request ADD COLUMN unauth_seq INTEGER")

    # -- writing -------------------------------------------------------------------------
    def write(self, requests: Iterable[Mapping[str, Any]], operational: Iterable[Mapping[str, Any]],
              now: float) -> int:
        """Store one record per request event and one per operational event; returns the
        number of request records written. Bad fields become NULL, never an error."""
        written = 0
        bucket_next: int | None = None  # the next unauth_seq, read once per batch that needs it
        for event in requests:
            request_id = _text(event.get("request_id"), 100)
            if request_id is None:
                continue
            ts = _num(event.get("ts"))
            ts = now if ts is None else ts
            level = request_level(event)
            bodies = {k: redact(event[k], self._secrets) for k in BODY_FIELDS if isinstance(event.get(k), str)}
            fields = {k: v for k, v in event.items() if k not in BODY_FIELDS} if bodies else event
            record = json.dumps(fields, default=str, separators=(",", ":"))
            if len(record) > MAX_RECORD_CHARS:
                record = json.dumps({k: event.get(k) for k in _COLUMNS if k in event}, default=str)
            if bodies:  # already capped at LOG_BODY_MAX_BYTES: outside the record's own limit
                record = json.dumps({**json.loads(record), **bodies}, default=str, separators=(",", ":"))
            attempts = event.get("upstream_attempts")
            unauth_seq = None
            expires = ts + self.retention[level]
            if unauthenticated(event):
                if bucket_next is None:
                    rows = self._sql.exec("SELECT MAX(unauth_seq) AS n FROM log_request WHERE unauth_seq IS NOT NULL")
                    bucket_next = int(rows[0]["n"] or 0) + 1 if rows else 1
                unauth_seq, bucket_next = bucket_next, bucket_next + 1
                expires = ts + self.retention[UNAUTHENTICATED]
            self._sql.exec(
                _INSERT, request_id, ts, level, expires, _text(event.get("trace_id"), 64),
                _text(event.get("key_id")), _text(event.get("model")), _text(event.get("provider")),
                _int(event.get("status")) or 0, _text(event.get("error_class"), 64),
                _text(event.get("cache_tier")) or _text(event.get("cache"), 32),
                1 if event.get("stream") is True else 0,
                len(attempts) if isinstance(attempts, list) else _int(event.get("attempts")),
                _int(event.get("failovers")), _int(event.get("tokens_in")), _int(event.get("tokens_out")),
                _num(event.get("cost_usd")), _num(event.get("latency_ms")), _message(event), record, unauth_seq,
            )
            written += 1
        if bucket_next is not None:  # the bucket's oldest beyond its cap go; no other row is touched
            self._sql.exec("DELETE FROM log_request WHERE unauth_seq IS NOT NULL AND unauth_seq <= ?",
                           bucket_next - 1 - self.unauthenticated_max_records)
        for event in operational:
            kind = _text(event.get("type") or event.get("event"), 64) or "event"
            ts = _num(event.get("ts"))
            ts = now if ts is None else ts
            given = event.get("level")
            event_level = given if isinstance(given, str) and given in LEVELS else (
                "warn" if kind in _WARN_EVENTS else "info")
            self._sql.exec(
                "INSERT INTO log_event (ts, level, expires, type, request_id, record) VALUES (?, ?, ?, ?, ?, ?)",
                ts, event_level, ts + self.retention[event_level], kind, _text(event.get("request_id"), 100),
                json.dumps(event, default=str, separators=(",", ":"))[:MAX_RECORD_CHARS],
            )
        return written

    def expire(self, now: float, batch: int = EXPIRE_BATCH) -> int:
        """Delete up to ``batch`` expired rows of each table; returns how many went. The
        caller runs it again on its next alarm / periodic run while rows remain."""
        deleted = 0
        for table in ("log_request", "log_event"):
            victims = self._sql.exec(f"SELECT seq FROM {table} WHERE expires <= ? ORDER BY expires LIMIT ?",
                                     now, batch)
            if victims:
                # seq order and expiry order differ across levels: delete exactly the selected ones.
                ids = [row["seq"] for row in victims]
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    self._sql.exec(f"DELETE FROM {table} WHERE seq IN ({', '.join('?' for _ in chunk)})", *chunk)
                deleted += len(ids)
        return deleted

    # -- reading -------------------------------------------------------------------------
    def query(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Newest first, filtered, one page: ``{"data": [...], "next_cursor": str|None}``.

        Filters: ``since``/``until`` (unix seconds), ``level``, ``status`` (``502`` or ``5xx``),
        ``model``, ``provider``, ``key_id``, ``cache``, ``error_class``, ``request_id``,
        ``trace_id``, ``q`` (text in the error message); ``limit`` (capped at MAX_PAGE) and
        ``cursor``. ``all=1`` (the JSON-lines export) lifts the page limit to ``max_rows``.
        """
        where, args = self._where(params)
        limit = self._limit(params.get("limit"), 50)
        cursor = params.get("cursor")
        if cursor:
            ts, seq = _parse_cursor(cursor)
            where.append("(ts < ? OR (ts = ? AND seq < ?))")
            args += [ts, ts, seq]
        sql = (f"SELECT seq, record, level FROM log_request"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY ts DESC, seq DESC LIMIT ?")
        rows = self._sql.exec(sql, *args, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        data = [self._record(row, bodies=False) for row in rows]  # bodies: one record at a time
        next_cursor = None
        if more and data:
            next_cursor = _cursor(float(data[-1]["ts"]), int(rows[-1]["seq"]))
        return {"object": "list", "data": data, "next_cursor": next_cursor, "has_more": more}

    def get(self, request_id: str) -> dict[str, Any] | None:
        """One request's record with its operational events, or None."""
        rows = self._sql.exec("SELECT seq, record, level FROM log_request WHERE request_id = ?"
                              " ORDER BY seq DESC LIMIT 1", request_id[:100])
        if not rows:
            return None
        record = self._record(rows[0])
        record["events"] = [
            {**json.loads(row["record"]), "level": row["level"]}
            for row in self._sql.exec("SELECT record, level FROM log_event WHERE request_id = ?"
                                      " ORDER BY seq LIMIT 100", request_id[:100])
        ]
        return record

    def count(self, bucket: str | None = None) -> int:
        """Request records in all, or in the ``"unauthenticated"`` bucket."""
        where = " WHERE unauth_seq IS NOT NULL" if bucket == UNAUTHENTICATED else ""
        rows = self._sql.exec(f"SELECT COUNT(*) AS n FROM log_request{where}")
        return int(rows[0]["n"]) if rows else 0

    def has_rows(self) -> bool:
        return any(self._sql.exec(f"SELECT 1 AS x FROM {table} LIMIT 1") for table in ("log_request", "log_event"))

    def answer(self, params: Mapping[str, str]) -> dict[str, Any]:
        """The one entry the hosts call (one RPC on the edge): ``{"id": ...}`` for one
        record (``{"record": ... | None}``), else a page; a bad query gives ``{"error": ...}``."""
        try:
            if params.get("id"):
                return {"record": self.get(str(params["id"]))}
            return self.query(params)
        except LogQueryError as exc:
            return {"error": {"message": str(exc), "param": exc.param}}

    @staticmethod
    def _record(row: Mapping[str, Any], bodies: bool = True) -> dict[str, Any]:
        record = json.loads(row["record"])
        if not isinstance(record, dict):
            return {"record": record, "level": row["level"]}
        record["level"] = row["level"]
        if not bodies:
            for name in BODY_FIELDS:
                record.pop(name, None)
        return record

    @staticmethod
    def _limit(text: str | None, default: int) -> int:
        if text in (None, ""):
            return default
        try:
            value = int(str(text))
        except ValueError:
            raise LogQueryError("limit must be an integer.", "limit") from None
        if value < 1:
            raise LogQueryError("limit must be >= 1.", "limit")
        return min(value, MAX_PAGE)

    @staticmethod
    def _where(params: Mapping[str, str]) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        for name, op in (("since", ">="), ("until", "<")):
            value = params.get(name)
            if value:
                try:
                    args.append(float(value))
                except ValueError:
                    raise LogQueryError(f"{name} must be a unix time in seconds.", name) from None
                where.append(f"ts {op} ?")
        for name in _TEXT_FILTERS:
            value = params.get(name)
            if value:
                if name == "level" and value not in LEVELS:
                    raise LogQueryError(f"level must be one of {', '.join(LEVELS)}.", "level")
                where.append(f"{name} = ?")
                args.append(value[:200])
        status = params.get("status")
        if status:
            text = status.lower()
            if len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
                where.append("status >= ? AND status < ?")
                args += [int(text[0]) * 100, int(text[0]) * 100 + 100]
            elif text.isdigit() and len(text) <= 3:
                where.append("status = ?")
                args.append(int(text))
            else:
                raise LogQueryError("status must be a code (502) or a class (5xx).", "status")
        q = params.get("q")
        if q:
            where.append("message LIKE ? ESCAPE '\\'")
            escaped = q[:200].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args.append(f"%{escaped}%")
        return where, args
