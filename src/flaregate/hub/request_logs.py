"""The request-log store: one record per API request plus the operational events, searchable.

Written once over the SQL-storage port: inside the metrics hub on both hosts (the Durable
Object's SQLite on the edge, the hub's sqlite file locally). The hub already receives every
request's analytics event in batches, so a record costs no extra hop and no work on the
request's path: the record *is* that event, stored in the compact form of
``request_log_format.py`` (fixed columns, labels, the rest only when present).

Retention classes: the four levels (the seed: debug 1 h, info 24 h, warn 7 d, error 30 d)
and the unauthenticated bucket. Records of requests refused before a key was known
(401/403/429 without ``key_id``) go to that bucket, kept
``LOG_UNAUTHENTICATED_RETENTION_SECONDS`` (1 h) and at most
``LOG_UNAUTHENTICATED_MAX_RECORDS`` (10 000) rows, its oldest out first, so a flood of bad
tokens can never evict real warnings or errors. Expiry is by class (``class, ts`` index):
a retention setting that changes applies to the rows already there.

Storage is bounded: ``LOG_MAX_BYTES`` (per host; on the edge per hub object) is the
store's byte budget, each row's estimated size kept in its ``size`` column and summed per
class in ``log_usage`` (no scan to know it). Past the budget the class furthest over its
share (:data:`CLASS_SHARES`) loses its oldest rows, so an info flood evicts info records,
never errors while they stay in their share. Optionally, successful ``info`` records above
``LOG_SAMPLE_INFO_PER_SECOND`` are sampled: a kept one carries ``sample_weight`` (the
records it stands for), so counts made from the log stay right; errors and warnings are
always kept.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..observability.error_classes import SERVER_SIDE
from ..observability.request_bodies import BODY_FIELDS
from ..ports import SqlStorage
from ..redaction import redact
from . import request_log_format as fmt

LEVELS = ("debug", "info", "warn", "error")
DEFAULT_RETENTION_SECONDS: dict[str, float] = {
    "debug": 3600.0, "info": 86400.0, "warn": 7 * 86400.0, "error": 30 * 86400.0,
}
MAX_PAGE = 200  # the hard page limit, whatever ``limit`` asks for
EXPIRE_BATCH = 5000  # rows deleted per alarm / periodic run (bounded work)
MAX_RECORD_CHARS = 32_000  # one record's extra fields; a bigger one keeps its columns only
UNAUTHENTICATED = "unauthenticated"  # the bucket (its retention key too)
UNAUTHENTICATED_MAX_RECORDS = 10_000
DEFAULT_UNAUTHENTICATED_SECONDS = 3600.0
DEFAULT_MAX_BYTES = 1024**3  # 1 GiB a store: a tenth of a SQLite-backed Durable Object's 10 GB
CLASSES = (*LEVELS, UNAUTHENTICATED)  # retention classes; the index is the ``class`` column
_UNAUTH_CLASS = CLASSES.index(UNAUTHENTICATED)
# The part of the byte budget each class keeps before the others must give way.
CLASS_SHARES = {"debug": 0.05, "info": 0.45, "warn": 0.2, "error": 0.2, UNAUTHENTICATED: 0.1}
LABELS_MAX = 50_000  # distinct labels; past it new texts are stored as they are
_REFUSED_BEFORE_AUTH = frozenset({401, 403, 429})
# 403s of a key that was found (its route or model not allowed): that key's own warning.
_KNOWN_KEY_CODES = frozenset({"route_not_allowed", "model_not_allowed"})
_WARN_EVENTS = frozenset({"failover", "circuit", "cooldown", "ratelimit_degraded", "ratelimit_saturated",
                          "webhook_failed", "webhook_failure"})

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS log_request (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, class INTEGER NOT NULL,"
    " level INTEGER NOT NULL, size INTEGER NOT NULL, weight INTEGER, request_id TEXT NOT NULL, nulls INTEGER, "
    + fmt.COLUMN_DEFS + ", message TEXT, extra TEXT, bodies TEXT)",
    "CREATE INDEX IF NOT EXISTS log_request_ts ON log_request (ts)",
    "CREATE INDEX IF NOT EXISTS log_request_id ON log_request (request_id)",
    "CREATE INDEX IF NOT EXISTS log_request_class ON log_request (class, ts)",
    "CREATE TABLE IF NOT EXISTS log_label (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS log_usage (class INTEGER PRIMARY KEY, records INTEGER NOT NULL DEFAULT 0,"
    " bytes INTEGER NOT NULL DEFAULT 0, evicted INTEGER NOT NULL DEFAULT 0, expired INTEGER NOT NULL DEFAULT 0,"
    " sampled_out INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS log_event (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,"
    " level TEXT NOT NULL, expires REAL NOT NULL, type TEXT NOT NULL, request_id TEXT, record TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS log_event_request ON log_event (request_id)",
    "CREATE INDEX IF NOT EXISTS log_event_expires ON log_event (expires)",
)
_ROW_COLUMNS = ("ts", "class", "level", "size", "weight", "request_id", "nulls", *fmt.COLUMNS,
                "message", "extra", "bodies")
_INSERT = (f"INSERT INTO log_request ({', '.join(_ROW_COLUMNS)}) VALUES ({', '.join('?' for _ in _ROW_COLUMNS)})")
_READ = "seq, ts, level, weight, request_id, nulls, " + ", ".join(fmt.COLUMNS) + ", extra"
_LABEL_FILTERS = ("model", "provider", "key_id", "error_class")
_TEXT_FILTERS = ("request_id",)
_DELETE_CHUNK = 90  # ids per DELETE: under a Durable Object's 100 bound parameters
_USAGE = ("records", "bytes", "evicted", "expired", "sampled_out")


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
                 secrets: Iterable[str] = (), unauthenticated_max_records: int = UNAUTHENTICATED_MAX_RECORDS,
                 *, max_bytes: int = DEFAULT_MAX_BYTES, sample_info_per_second: float = 0.0) -> None:
        self._sql = sql
        self._secrets = [s for s in secrets if s]  # taken out of kept bodies (LOG_BODIES)
        self.retention = {**DEFAULT_RETENTION_SECONDS, UNAUTHENTICATED: DEFAULT_UNAUTHENTICATED_SECONDS,
                          **(retention_seconds or {})}
        self.unauthenticated_max_records = max(1, int(unauthenticated_max_records))
        self.max_bytes = max(1, int(max_bytes))
        self.sample_info_per_second = max(0.0, float(sample_info_per_second))
        self._labels: dict[str, int] = {}  # text -> id, filled as labels are used
        self._label_texts: dict[int, str] = {}
        self._label_count: int | None = None
        self._sample_second = -1  # the second the info sampler is counting, and its count
        self._sample_seen = 0
        self._sample_owed = 0
        legacy = self._legacy_rows()
        for statement in SCHEMA:
            sql.exec(statement)
        if legacy:
            self._convert_legacy()

    # -- the first format ----------------------------------------------------------------
    def _legacy_rows(self) -> bool:
        """A store of the first format (the whole event as JSON in ``record``): its table
        is renamed, to be converted once the new one exists."""
        try:
            columns = {row["name"] for row in self._sql.exec("PRAGMA table_info(log_request)")}
        except Exception:  # a store without this PRAGMA: it was made in this format
            return False
        if "record" not in columns:
            return False
        for index in ("log_request_ts", "log_request_id", "log_request_expires", "log_request_unauth"):
            self._sql.exec(f"DROP INDEX IF EXISTS {index}")
        self._sql.exec("ALTER TABLE log_request RENAME TO log_request_v1")
        return True

    def _convert_legacy(self) -> None:
        """Every record of the first format, rewritten in this one (oldest first, in
        batches), then the old table goes. The budget applies once it is done."""
        last = 0
        while True:
            rows = self._sql.exec("SELECT seq, ts, record FROM log_request_v1 WHERE seq > ? ORDER BY seq LIMIT 500",
                                  last)
            if not rows:
                break
            last = int(rows[-1]["seq"])
            events = []
            for row in rows:
                with contextlib.suppress(ValueError):
                    event = json.loads(row["record"])
                    if isinstance(event, dict):
                        events.append({**event, "ts": event.get("ts", row["ts"])})
            self.write(events, [], float(rows[-1]["ts"] or 0), sample=False)
        self._sql.exec("DROP TABLE log_request_v1")

    # -- labels --------------------------------------------------------------------------
    def _label(self, text: str) -> int | None:
        found = self._labels.get(text)
        if found is not None:
            return found
        rows = self._sql.exec("SELECT id FROM log_label WHERE text = ?", text)
        if not rows:
            if self._label_count is None:
                self._label_count = int(self._sql.exec("SELECT COUNT(*) AS n FROM log_label")[0]["n"])
            if self._label_count >= LABELS_MAX:
                return None  # the value is stored as text; nothing is lost
            self._sql.exec("INSERT INTO log_label (text) VALUES (?)", text)
            self._label_count += 1
            rows = self._sql.exec("SELECT id FROM log_label WHERE text = ?", text)
        found = int(rows[0]["id"])
        if len(self._labels) < LABELS_MAX:
            self._labels[text] = found
            self._label_texts[found] = text
        return found

    def _existing_label(self, text: str) -> int | None:
        found = self._labels.get(text)
        if found is None:
            rows = self._sql.exec("SELECT id FROM log_label WHERE text = ?", text[:fmt.MAX_LABEL_CHARS])
            found = int(rows[0]["id"]) if rows else None
        return found

    def _texts(self, ids: set[int]) -> dict[int, str]:
        missing = [i for i in ids if i not in self._label_texts]
        for start in range(0, len(missing), _DELETE_CHUNK):
            chunk = missing[start:start + _DELETE_CHUNK]
            for row in self._sql.exec(f"SELECT id, text FROM log_label WHERE id IN ({', '.join('?' for _ in chunk)})",
                                      *chunk):
                if len(self._label_texts) < LABELS_MAX:
                    self._label_texts[int(row["id"])] = row["text"]
                    self._labels[row["text"]] = int(row["id"])
        return {i: self._label_texts.get(i, "?") for i in ids} if missing else self._label_texts

    # -- writing -------------------------------------------------------------------------
    def write(self, requests: Iterable[Mapping[str, Any]], operational: Iterable[Mapping[str, Any]],
              now: float, *, sample: bool = True) -> int:
        """Store one record per request event (unless the info sampler leaves it out) and one
        per operational event; returns the number of request records written. Bad fields
        go to the record's extra JSON or become NULL, never an error."""
        written = 0
        added: dict[int, list[int]] = {}  # class -> [records, bytes, sampled out]
        for event in requests:
            request_id = _text(event.get("request_id"), 100)
            if request_id is None:
                continue
            ts = _num(event.get("ts"))
            ts = now if ts is None else ts
            level = request_level(event)
            klass = _UNAUTH_CLASS if unauthenticated(event) else LEVELS.index(level)
            weight = self._sample_weight(now) if sample and klass == 1 and level == "info" else 1
            counts = added.setdefault(klass, [0, 0, 0])
            if weight == 0:
                counts[2] += 1
                continue
            values, nulls, extra = fmt.encode(event, self._label)
            if extra is not None and len(extra) > MAX_RECORD_CHARS:
                extra = None  # a record that big keeps its columns only
            bodies = {k: redact(event[k], self._secrets) for k in BODY_FIELDS if isinstance(event.get(k), str)}
            bodies_text = json.dumps(bodies, separators=(",", ":")) if bodies else None
            message = _message(event)
            error = event.get("error")
            if message is not None and isinstance(error, str) and message == error[:500]:
                message = None  # the error column has it
            size = fmt.row_bytes(values, extra, request_id) + len(bodies_text or "") + len(message or "")
            self._sql.exec(_INSERT, ts, klass, LEVELS.index(level), size, weight if weight > 1 else None,
                           request_id, nulls or None, *values, message, extra, bodies_text)
            counts[0] += 1
            counts[1] += size
            written += 1
        if added:
            for klass, (records, size, sampled_out) in added.items():
                self._sql.exec(
                    "INSERT INTO log_usage (class, records, bytes, sampled_out) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(class) DO UPDATE SET records = records + excluded.records,"
                    " bytes = bytes + excluded.bytes, sampled_out = sampled_out + excluded.sampled_out",
                    klass, records, size, sampled_out)
            if _UNAUTH_CLASS in added:  # the bucket's oldest beyond its cap go; no other row is touched
                over = self._usage()[_UNAUTH_CLASS]["records"] - self.unauthenticated_max_records
                if over > 0:
                    self._delete_oldest(_UNAUTH_CLASS, over, "evicted")
            self._enforce_budget()
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

    def _sample_weight(self, now: float) -> int:
        """0 to leave this successful info record out, else how many records it stands for.
        Within each second the first ``rate`` are kept; past them the k-th record waits
        until ceil(k / rate) records are owed and is kept weighing them all. What is still
        owed at the end of a second goes with the next record kept, so the weights of the
        kept records add up to every record seen."""
        rate = self.sample_info_per_second
        if rate <= 0:
            return 1
        second = int(now)
        if second != self._sample_second:
            self._sample_second, self._sample_seen = second, 0
        self._sample_seen += 1
        self._sample_owed += 1
        if self._sample_seen > rate and self._sample_owed < math.ceil(self._sample_seen / rate):
            return 0
        weight, self._sample_owed = self._sample_owed, 0
        return weight

    # -- the byte budget -----------------------------------------------------------------
    def _usage(self) -> dict[int, dict[str, int]]:
        usage = {klass: dict.fromkeys(_USAGE, 0) for klass in range(len(CLASSES))}
        for row in self._sql.exec("SELECT class, " + ", ".join(_USAGE) + " FROM log_usage"):
            if int(row["class"]) in usage:
                usage[int(row["class"])] = {name: int(row[name] or 0) for name in _USAGE}
        return usage

    def _enforce_budget(self) -> None:
        """Past the budget, the class furthest over its share loses its oldest rows."""
        for _ in range(50):  # bounded work per batch; the next batch continues
            usage = self._usage()
            total = sum(u["bytes"] for u in usage.values())
            excess = total - self.max_bytes
            if excess <= 0:
                return
            klass = max(usage, key=lambda c: usage[c]["bytes"] - CLASS_SHARES[CLASSES[c]] * self.max_bytes)
            records = usage[klass]["records"]
            if records <= 0:
                return
            average = usage[klass]["bytes"] / records
            self._delete_oldest(klass, min(EXPIRE_BATCH, max(1, math.ceil(excess / max(1.0, average)))), "evicted")

    def _delete_oldest(self, klass: int, count: int, reason: str, before: float | None = None) -> int:
        where = "class = ?"
        args: list[Any] = [klass]
        if before is not None:
            where += " AND ts <= ?"
            args.append(before)
        victims = self._sql.exec(f"SELECT seq, size FROM log_request WHERE {where} ORDER BY ts, seq LIMIT ?",
                                 *args, count)
        if not victims:
            return 0
        ids = [row["seq"] for row in victims]
        for start in range(0, len(ids), _DELETE_CHUNK):
            chunk = ids[start:start + _DELETE_CHUNK]
            self._sql.exec(f"DELETE FROM log_request WHERE seq IN ({', '.join('?' for _ in chunk)})", *chunk)
        self._sql.exec(f"UPDATE log_usage SET records = MAX(0, records - ?), bytes = MAX(0, bytes - ?),"
                       f" {reason} = {reason} + ? WHERE class = ?",
                       len(ids), sum(int(row["size"]) for row in victims), len(ids), klass)
        return len(ids)

    def usage(self) -> dict[str, Any]:
        """What the store holds and has let go, per retention class, with the budget."""
        usage = self._usage()
        classes = {CLASSES[klass]: counts for klass, counts in usage.items()}
        return {"budget_bytes": self.max_bytes, "bytes": sum(u["bytes"] for u in usage.values()),
                "records": sum(u["records"] for u in usage.values()),
                "evicted": sum(u["evicted"] for u in usage.values()),
                "sampled_out": sum(u["sampled_out"] for u in usage.values()),
                "sample_info_per_second": self.sample_info_per_second or None, "classes": classes}

    def expire(self, now: float, batch: int = EXPIRE_BATCH) -> int:
        """Delete up to ``batch`` expired rows of each table (oldest first, class by
        class); returns how many went. The caller runs it again on its next alarm /
        periodic run while rows remain."""
        deleted = 0
        for klass, name in enumerate(CLASSES):
            if deleted >= batch:
                break
            deleted += self._delete_oldest(klass, batch - deleted, "expired", before=now - self.retention[name])
        victims = self._sql.exec("SELECT seq FROM log_event WHERE expires <= ? ORDER BY expires LIMIT ?", now, batch)
        if victims:
            ids = [row["seq"] for row in victims]
            for start in range(0, len(ids), _DELETE_CHUNK):
                chunk = ids[start:start + _DELETE_CHUNK]
                self._sql.exec(f"DELETE FROM log_event WHERE seq IN ({', '.join('?' for _ in chunk)})", *chunk)
            deleted += len(ids)
        return deleted

    # -- reading -------------------------------------------------------------------------
    def query(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Newest first, filtered, one page: ``{"data": [...], "next_cursor": str|None}``.

        Filters: ``since``/``until`` (unix seconds), ``level``, ``status`` (``502`` or ``5xx``),
        ``model``, ``provider``, ``key_id``, ``cache``, ``error_class``, ``request_id``,
        ``trace_id``, ``q`` (text in the error message); ``limit`` (capped at MAX_PAGE) and
        ``cursor``.
        """
        where, args = self._where(params)
        limit = self._limit(params.get("limit"), 50)
        cursor = params.get("cursor")
        if cursor:
            ts, seq = _parse_cursor(cursor)
            where.append("(ts < ? OR (ts = ? AND seq < ?))")
            args += [ts, ts, seq]
        sql = (f"SELECT {_READ} FROM log_request"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY ts DESC, seq DESC LIMIT ?")
        rows = self._sql.exec(sql, *args, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        data = self._records(rows)  # bodies: one record at a time
        next_cursor = None
        if more and data:
            next_cursor = _cursor(float(rows[-1]["ts"]), int(rows[-1]["seq"]))
        page: dict[str, Any] = {"object": "list", "data": data, "next_cursor": next_cursor, "has_more": more}
        if params.get("with_seq"):  # for a merge across hub shards (shards.py)
            page["seqs"] = [int(row["seq"]) for row in rows]
        return page

    def get(self, request_id: str) -> dict[str, Any] | None:
        """One request's record (with its bodies, when kept) and its operational events, or None."""
        rows = self._sql.exec(f"SELECT {_READ}, bodies FROM log_request WHERE request_id = ?"
                              " ORDER BY seq DESC LIMIT 1", request_id[:100])
        if not rows:
            return None
        record = self._records(rows)[0]
        if rows[0].get("bodies"):
            record.update(json.loads(rows[0]["bodies"]))
        record["events"] = [
            {**json.loads(row["record"]), "level": row["level"]}
            for row in self._sql.exec("SELECT record, level FROM log_event WHERE request_id = ?"
                                      " ORDER BY seq LIMIT 100", request_id[:100])
        ]
        return record

    def count(self, bucket: str | None = None) -> int:
        """Request records in all, or in the ``"unauthenticated"`` bucket."""
        where = f" WHERE class = {_UNAUTH_CLASS}" if bucket == UNAUTHENTICATED else ""
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

    def _records(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        labels = self._texts(fmt.label_ids(rows))
        records = []
        for row in rows:
            record = fmt.decode(row, labels)
            record["level"] = LEVELS[int(row["level"])]
            if row.get("weight"):
                record["sample_weight"] = int(row["weight"])
            records.append(record)
        return records

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

    def _where(self, params: Mapping[str, str]) -> tuple[list[str], list[Any]]:
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
        level = params.get("level")
        if level:
            if level not in LEVELS:
                raise LogQueryError(f"level must be one of {', '.join(LEVELS)}.", "level")
            where.append("level = ?")
            args.append(LEVELS.index(level))
        for name in _TEXT_FILTERS:
            value = params.get(name)
            if value:
                where.append(f"{name} = ?")
                args.append(value[:200])
        trace_id = params.get("trace_id")
        if trace_id:
            where.append("trace_id = ?")
            args.append(fmt.pack_hex(trace_id[:200]))
        for name in (*_LABEL_FILTERS, "cache"):
            value = params.get(name)
            if value:  # a label's id, or the text itself where it was stored as text
                text = value[:200]
                column = "COALESCE(cache_tier, cache)" if name == "cache" else name
                found = self._existing_label(text)
                where.append(f"{column} IN (?, ?)")
                args += [text, found if found is not None else text]
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
            where.append("COALESCE(message, error) LIKE ? ESCAPE '\\'")
            escaped = q[:200].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args.append(f"%{escaped}%")
        return where, args
