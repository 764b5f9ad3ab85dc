"""SQLite behind the SQL-storage and key-value ports (one file under the data dir)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...ports import Clock


class SqliteStorage:
    """The ``exec(sql, *params) -> rows`` shape of Durable Object SQL, over sqlite3."""

    def __init__(self, path: str | Path) -> None:
        # Autocommit: every statement is its own transaction, as in a Durable Object.
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.row_factory = sqlite3.Row
        if str(path) != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")

    def exec(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in self._db.execute(sql, params)]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Statements inside commit together (optional port extra: a Durable Object commits
        the writes of one synchronous run together anyway). Nested use joins the outer one."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class SqliteKeyValueStore:
    """Text values with expiry; expired rows read as missing and are swept on write."""

    SCHEMA = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL)"

    def __init__(self, sql: SqliteStorage, clock: Clock) -> None:
        self._sql = sql
        self._clock = clock
        self._writes = 0
        sql.exec(self.SCHEMA)

    async def get(self, key: str) -> str | None:
        rows = self._sql.exec("SELECT value FROM kv WHERE key = ? AND expires_at > ?", key, self._clock.now())
        return rows[0]["value"] if rows else None

    async def put(self, key: str, value: str, ttl_seconds: int) -> None:
        now = self._clock.now()
        self._sql.exec(
            "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            key,
            value,
            now + ttl_seconds,
        )
        self._writes += 1
        if self._writes % 256 == 0:  # amortised sweep of expired rows
            self._sql.exec("DELETE FROM kv WHERE expires_at <= ?", now)

    async def delete(self, key: str) -> None:
        self._sql.exec("DELETE FROM kv WHERE key = ?", key)
