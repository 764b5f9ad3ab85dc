"""The Realtime state that must hold across isolates and replicas, written once over the
SQL port and served by the security store (its Durable Object on the edge, the server's
SQLite file locally): a key's open-session slots, and the ephemeral client secrets.

Slots are rows with an expiry: a session renews its own with a heartbeat, so a crashed
isolate's slots lapse after ``ttl`` instead of leaking. A secret is stored by its SHA-256
digest only and deleted when it is used: the second use finds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..ports import Clock, SqlStorage

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS realtime_slots ("
    " session TEXT PRIMARY KEY, key_id TEXT NOT NULL, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS realtime_slots_by_key ON realtime_slots (key_id, expires_at)",
    "CREATE TABLE IF NOT EXISTS realtime_secrets ("
    " digest TEXT PRIMARY KEY, record TEXT NOT NULL, expires_at REAL NOT NULL)",
)

OPERATIONS = {
    "realtime.slots.acquire": "acquire_slot", "realtime.slots.renew": "renew_slot",
    "realtime.slots.release": "release_slot", "realtime.secrets.put": "put_secret",
    "realtime.secrets.take": "take_secret",
}


def operations(store: Any) -> dict[str, Callable[..., Any]]:
    """The operation table of ``store`` (this SQL one, or the Redis one: the same names)."""
    return {name: getattr(store, method) for name, method in OPERATIONS.items()}


class RealtimeStore:
    def __init__(self, sql: SqlStorage, clock: Clock) -> None:
        self._sql = sql
        self._clock = clock
        for statement in SCHEMA:
            sql.exec(statement)

    # -- session slots ---------------------------------------------------------------------
    def acquire_slot(self, key_id: str, session: str, limit: int, ttl: float) -> dict[str, Any]:
        """Take one of ``limit`` slots for ``key_id``; synchronous, so count and insert are
        one atomic step in the object. Expired slots are swept first."""
        now = self._clock.now()
        self._sql.exec("DELETE FROM realtime_slots WHERE key_id = ? AND expires_at <= ?", key_id, now)
        held = int(self._sql.exec("SELECT COUNT(*) AS n FROM realtime_slots WHERE key_id = ?", key_id)[0]["n"])
        if held >= limit:
            soonest = self._sql.exec("SELECT MIN(expires_at) AS t FROM realtime_slots WHERE key_id = ?", key_id)
            return {"allowed": False, "held": held, "limit": limit,
                    "retry_after_seconds": max(1.0, float(soonest[0]["t"] or now) - now)}
        self._sql.exec("INSERT OR REPLACE INTO realtime_slots (session, key_id, expires_at) VALUES (?, ?, ?)",
                       session, key_id, now + ttl)
        return {"allowed": True, "held": held + 1, "limit": limit}

    def renew_slot(self, key_id: str, session: str, ttl: float) -> bool:
        return bool(self._sql.exec("UPDATE realtime_slots SET expires_at = ? WHERE session = ? RETURNING session",
                                   self._clock.now() + ttl, session))

    def release_slot(self, key_id: str, session: str) -> bool:
        return bool(self._sql.exec("DELETE FROM realtime_slots WHERE session = ? RETURNING session", session))

    # -- ephemeral client secrets ----------------------------------------------------------
    def put_secret(self, digest: str, record: dict[str, Any], expires_at: float) -> None:
        now = self._clock.now()
        self._sql.exec("DELETE FROM realtime_secrets WHERE expires_at <= ?", now)
        self._sql.exec("INSERT INTO realtime_secrets (digest, record, expires_at) VALUES (?, ?, ?)",
                       digest, json.dumps(record), expires_at)

    def take_secret(self, digest: str) -> dict[str, Any] | None:
        """The secret's record, once: it is deleted in the same step (None: unknown, used or expired)."""
        rows = self._sql.exec("DELETE FROM realtime_secrets WHERE digest = ? RETURNING record, expires_at", digest)
        if not rows or float(rows[0]["expires_at"]) <= self._clock.now():
            return None
        record: dict[str, Any] = json.loads(rows[0]["record"])
        return record
