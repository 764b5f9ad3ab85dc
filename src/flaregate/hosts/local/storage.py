"""SQLite behind the SQL-storage and key-value ports (one file under the data dir)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...ports import Clock
from .files import private_file, tighten_sqlite

log = logging.getLogger("flaregate.local")

# Tables written on every request, whose last few milliseconds may be lost in a crash:
# rate-limit buckets, the response cache, the metrics hub. Writes to them are grouped.
HOT_TABLE_PREFIXES = ("rl_", "kv", "hub_")
COMMIT_DELAY_SECONDS = 0.02
# A checkpoint copies each page changed since the last one once, however often it changed:
# every 50 ms the thread cost ~0.04-0.06 ms of CPU per cache miss under load, every 250 ms
# ~0.02 (per-thread /proc counters, 16 connections). The log still restarts near
# WAL_RESTART_FRAMES. With synchronous=NORMAL a power cut (not a process crash) may lose
# the commits since the last checkpoint.
CHECKPOINT_SECONDS = 0.25
WAL_RESTART_FRAMES = 1000  # SQLite's own autocheckpoint size (~4 MB)

_READ, _HOT_WRITE, _WRITE = "read", "hot", "write"
_WRITE_TARGET = re.compile(
    r"^\s*(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|UPDATE(?:\s+OR\s+\w+)?|DELETE\s+FROM)"
    r"\s+[\"`\[]?(\w+)", re.IGNORECASE)


def statement_kind(sql: str, hot_prefixes: tuple[str, ...] = HOT_TABLE_PREFIXES) -> str:
    """read (SELECT, PRAGMA), hot (a write to a hot table) or write (anything else)."""
    if sql.lstrip()[:6].upper() in ("SELECT", "PRAGMA"):
        return _READ
    match = _WRITE_TARGET.match(sql)
    if match and match.group(1).lower().startswith(hot_prefixes):
        return _HOT_WRITE
    return _WRITE


class SqliteStorage:
    """The ``exec(sql, *params) -> rows`` shape of Durable Object SQL, over sqlite3.

    Writes to hot tables are grouped into one transaction committed ``commit_delay``
    seconds after its first write (group commit, as a Durable Object coalesces the writes
    of one event): each autocommitted write costs a WAL commit, several per request. Reads
    on this connection see the open batch. Any other write (keys, webhooks, schema)
    commits the batch first and is committed at once. Without a running event loop (the
    CLI, plain scripts) every statement is its own transaction.

    While batching, WAL checkpoints (copying the log into the database file, with fsync)
    are done by a thread (:class:`WalCheckpointer`). Left to SQLite they ran inside a COMMIT
    on the event loop, every ~600 cache misses, and put the 1-connection p99 of a miss at
    ~5.5 ms instead of ~1.1 ms. Once the log is large, the commit that follows finishes
    the thread's checkpoint (only the frames it has not copied yet), so the next write
    starts the log over instead of growing it.
    """

    def __init__(self, path: str | Path, commit_delay: float = COMMIT_DELAY_SECONDS,
                 hot_prefixes: tuple[str, ...] = HOT_TABLE_PREFIXES,
                 checkpoint_interval: float = CHECKPOINT_SECONDS) -> None:
        self._path = str(path)
        if self._path != ":memory:":  # 0600 before SQLite opens it: its -wal and -shm get the same
            private_file(Path(self._path))
        self._db = sqlite3.connect(self._path, isolation_level=None)  # autocommit unless batching
        self._db.row_factory = sqlite3.Row
        self._checkpointer: WalCheckpointer | None = None
        self._checkpoint_interval = checkpoint_interval
        if self._path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            tighten_sqlite(Path(self._path))
        self._commit_delay = commit_delay
        self._hot = hot_prefixes
        self._kinds: dict[str, str] = {}  # SQL text -> kind; statements are constants
        self._batch: asyncio.TimerHandle | None = None
        self._explicit = 0  # depth of transaction() blocks: a plain write must not commit them

    def exec(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        kind = self._kinds.get(sql)
        if kind is None:
            kind = statement_kind(sql, self._hot)
            if len(self._kinds) < 4096:
                self._kinds[sql] = kind
        if kind is _HOT_WRITE:
            if self._batch is None and self._commit_delay > 0:
                self._open_batch()
        elif kind is _WRITE and self._batch is not None and not self._explicit:
            self.commit()
        return [dict(row) for row in self._db.execute(sql, params)]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Statements inside commit together (optional port extra: a Durable Object commits
        the writes of one synchronous run together anyway). Nested use joins the outer one,
        and so does use while a group-commit batch is open: it commits with the batch."""
        if self._db.in_transaction:
            self._explicit += 1
            try:
                yield
            finally:
                self._explicit -= 1
            return
        self._db.execute("BEGIN")
        self._explicit += 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        finally:
            self._explicit -= 1
        self._db.execute("COMMIT")

    def _open_batch(self) -> None:
        if self._db.in_transaction:
            return  # inside transaction(): its writes commit with it
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop: autocommit
        if self._checkpointer is None and self._path != ":memory:":
            self._checkpointer = WalCheckpointer(self._path, self._checkpoint_interval)
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # the thread checkpoints from now on
        self._db.execute("BEGIN")
        self._batch = loop.call_later(self._commit_delay, self.commit)

    def commit(self) -> None:
        """Commit the open batch of hot writes, if any."""
        if self._batch is None:
            return
        self._batch.cancel()
        self._batch = None
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            log.error("group commit failed; its writes are lost", exc_info=True)
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        checkpointer = self._checkpointer
        if checkpointer is not None and checkpointer.wal_frames >= WAL_RESTART_FRAMES:
            checkpointer.wal_frames = 0
            try:  # busy when the thread is at it: then at a later commit
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                log.warning("WAL checkpoint failed", exc_info=True)

    def close(self) -> None:
        self.commit()
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self._db.close()  # the last connection to close checkpoints the rest


class WalCheckpointer:
    """Copies the WAL of ``path`` into the database every ``interval`` seconds from a
    thread with its own connection. PASSIVE: it never waits for, nor blocks, the server's
    connection (sqlite3 releases the GIL while it works)."""

    def __init__(self, path: str, interval: float = CHECKPOINT_SECONDS) -> None:
        self._path = path
        self._interval = interval
        self.wal_frames = 0  # frames in the log at the last checkpoint
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flaregate-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None)
        try:
            while not self._stopped.wait(self._interval):
                try:
                    _busy, frames, _copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.wal_frames = frames
                except sqlite3.Error:
                    log.warning("WAL checkpoint failed; retrying", exc_info=True)
        finally:
            db.close()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)


class SqliteKeyValueStore:
    """Text values with expiry; expired rows read as missing and are swept on write. The
    cold cache tier uses table ``kv``, the warm one ``kv_warm`` (both group-committed)."""

    def __init__(self, sql: SqliteStorage, clock: Clock, table: str = "kv") -> None:
        if not re.fullmatch(r"kv\w*", table):
            raise ValueError(f"bad key-value table name {table!r}")
        self._sql = sql
        self._clock = clock
        self._writes = 0
        # The sweep reads only expired rows instead of scanning the whole table.
        sql.exec(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                 " expires_at REAL NOT NULL)")
        sql.exec(f"CREATE INDEX IF NOT EXISTS {table}_expires_at ON {table} (expires_at)")
        self._get = f"SELECT value FROM {table} WHERE key = ? AND expires_at > ?"
        self._put = (f"INSERT INTO {table} (key, value, expires_at) VALUES (?, ?, ?)"
                     " ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at")
        self._sweep = f"DELETE FROM {table} WHERE expires_at <= ?"
        self._delete = f"DELETE FROM {table} WHERE key = ?"

    async def get(self, key: str) -> str | None:
        rows = self._sql.exec(self._get, key, self._clock.now())
        return rows[0]["value"] if rows else None

    async def put(self, key: str, value: str, ttl_seconds: int) -> None:
        now = self._clock.now()
        self._sql.exec(self._put, key, value, now + ttl_seconds)
        self._writes += 1
        if self._writes % 256 == 0:  # amortised sweep of expired rows
            self._sql.exec(self._sweep, now)

    async def delete(self, key: str) -> None:
        self._sql.exec(self._delete, key)
