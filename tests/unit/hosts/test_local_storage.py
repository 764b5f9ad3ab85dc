"""The local host's SQLite storage: group commit of hot writes, immediate commit of others."""

import asyncio
import sqlite3
import threading

import pytest

from flaregate.clock import SystemClock
from flaregate.hosts.local.storage import SqliteKeyValueStore, SqliteStorage, statement_kind


def other_connection_sees(path, sql: str) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


@pytest.mark.parametrize(("sql", "kind"), [
    ("SELECT tokens FROM rl_buckets WHERE key = ?", "read"),
    ("  pragma journal_mode", "read"),
    ("INSERT INTO rl_buckets (key) VALUES (?) ON CONFLICT(key) DO UPDATE SET key = excluded.key", "hot"),
    ("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", "hot"),
    ('UPDATE "hub_state" SET value = 1', "hot"),
    ("DELETE FROM hub_latency WHERE id <= ?", "hot"),
    ("INSERT INTO gateway_keys (id) VALUES (?)", "write"),
    ("DELETE FROM webhooks WHERE id = ?", "write"),
    ("CREATE TABLE IF NOT EXISTS rl_buckets (key TEXT)", "write"),
])
def test_statement_kinds(sql, kind):
    assert statement_kind(sql) == kind


def test_without_an_event_loop_every_statement_commits(tmp_path):
    path = tmp_path / "db.sqlite3"
    storage = SqliteStorage(path)
    storage.exec("CREATE TABLE rl_buckets (key TEXT PRIMARY KEY, tokens REAL)")
    storage.exec("INSERT INTO rl_buckets VALUES (?, ?)", "a", 1.0)
    assert other_connection_sees(path, "SELECT key FROM rl_buckets") == [("a",)]
    storage.close()


async def test_hot_writes_are_grouped_and_committed_after_the_delay(tmp_path):
    path = tmp_path / "db.sqlite3"
    storage = SqliteStorage(path, commit_delay=0.01)
    storage.exec("CREATE TABLE rl_buckets (key TEXT PRIMARY KEY, tokens REAL)")
    for n in range(5):
        storage.exec("INSERT INTO rl_buckets VALUES (?, ?)", f"k{n}", 1.0)
    # The open batch is visible on the server's own connection, not yet on disk.
    assert len(storage.exec("SELECT key FROM rl_buckets")) == 5
    assert other_connection_sees(path, "SELECT key FROM rl_buckets") == []
    await asyncio.sleep(0.1)  # the commit timer (0.01 s) fires first
    assert len(other_connection_sees(path, "SELECT key FROM rl_buckets")) == 5
    storage.close()


async def test_any_other_write_commits_the_batch_first_and_itself_at_once(tmp_path):
    path = tmp_path / "db.sqlite3"
    storage = SqliteStorage(path, commit_delay=60)
    storage.exec("CREATE TABLE rl_buckets (key TEXT PRIMARY KEY)")
    storage.exec("CREATE TABLE gateway_keys (id TEXT PRIMARY KEY)")
    storage.exec("INSERT INTO rl_buckets VALUES (?)", "hot")
    storage.exec("INSERT INTO gateway_keys VALUES (?)", "revoked-or-created-key")
    assert other_connection_sees(path, "SELECT key FROM rl_buckets") == [("hot",)]
    assert other_connection_sees(path, "SELECT id FROM gateway_keys") == [("revoked-or-created-key",)]
    storage.exec("INSERT INTO rl_buckets VALUES (?)", "late")
    storage.close()  # closing commits what is still open
    assert len(other_connection_sees(path, "SELECT key FROM rl_buckets")) == 2


async def test_a_failing_statement_leaves_the_batch_usable(tmp_path):
    path = tmp_path / "db.sqlite3"
    storage = SqliteStorage(path, commit_delay=60)
    storage.exec("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    storage.exec("INSERT INTO kv VALUES (?, ?)", "a", "1")
    with pytest.raises(sqlite3.IntegrityError):
        storage.exec("INSERT INTO kv VALUES (?, ?)", "b", None)
    storage.exec("INSERT INTO kv VALUES (?, ?)", "c", "3")
    storage.commit()
    assert other_connection_sees(path, "SELECT key FROM kv ORDER BY key") == [("a",), ("c",)]
    storage.close()


async def test_kv_sweep_uses_the_expiry_index(tmp_path):
    storage = SqliteStorage(tmp_path / "db.sqlite3")
    SqliteKeyValueStore(storage, SystemClock())
    plan = storage.exec("EXPLAIN QUERY PLAN DELETE FROM kv WHERE expires_at <= ?", 0.0)
    assert any("kv_expires_at" in row["detail"] for row in plan)
    storage.close()


def checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "flaregate-wal-checkpoint"]


async def thread_checkpointed(storage: SqliteStorage) -> None:
    """Wait for the thread's next checkpoint: on a loaded machine it may get no turn for a
    while, and this test is about what its checkpoints do, not how often it gets them."""
    checkpointer = storage._checkpointer
    assert checkpointer is not None
    checkpointer.wal_frames = -1  # the thread writes the frame count of its next checkpoint
    for _ in range(2000):
        if checkpointer.wal_frames >= 0:
            return
        await asyncio.sleep(0.001)


def wal_bytes(path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


async def test_checkpoints_run_on_a_thread_and_the_log_stays_bounded(tmp_path):
    path = tmp_path / "db.sqlite3"
    storage = SqliteStorage(path, commit_delay=60, checkpoint_interval=0.005)
    storage.exec("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    assert not checkpoint_threads()  # nothing batched yet: SQLite checkpoints as usual
    for batch in range(120):  # ~12 MB of rows at random keys, committed in 120 batches
        for n in range(100):
            storage.exec("INSERT INTO kv VALUES (?, ?)", f"{(batch * 7919 + n * 104729) % 999983:06d}-{batch}-{n}",
                         "x" * 1000)
            if n == 0:
                await asyncio.sleep(0.01)  # the thread's turn, while a batch is open (as under load)
        if batch == 0:
            assert storage.exec("PRAGMA wal_autocheckpoint")[0]["wal_autocheckpoint"] == 0
            assert len(checkpoint_threads()) == 1
        storage.commit()
        await thread_checkpointed(storage)
    # The log is started over instead of growing with every batch (12 MB and more).
    assert wal_bytes(path) < 8_000_000
    storage.close()
    assert not checkpoint_threads()
    assert wal_bytes(path) == 0  # the last connection checkpointed the rest and removed it
    assert other_connection_sees(path, "SELECT COUNT(*) FROM kv") == [(12_000,)]


async def test_transaction_joins_an_open_batch_and_a_plain_write_does_not_split_it(tmp_path):
    path = tmp_path / "db.sqlite3"
    storage = SqliteStorage(path, commit_delay=60)
    storage.exec("CREATE TABLE hub_state (name TEXT PRIMARY KEY, value REAL)")
    storage.exec("CREATE TABLE webhooks (id TEXT PRIMARY KEY)")
    storage.exec("INSERT INTO hub_state VALUES (?, ?)", "batched", 1)  # opens a batch
    with storage.transaction():
        storage.exec("INSERT INTO hub_state VALUES (?, ?)", "inside", 2)
        storage.exec("INSERT INTO webhooks VALUES (?)", "w1")  # would commit the batch outside
        assert other_connection_sees(path, "SELECT name FROM hub_state") == []
    storage.commit()
    assert len(other_connection_sees(path, "SELECT name FROM hub_state")) == 2
    storage.close()


async def test_transaction_without_a_batch_commits_itself_and_hot_writes_join_it(tmp_path):
    path = tmp_path / "db.sqlite3"
    storage = SqliteStorage(path, commit_delay=60)
    storage.exec("CREATE TABLE hub_state (name TEXT PRIMARY KEY, value REAL)")
    with storage.transaction():  # hot writes inside open no batch of their own
        storage.exec("INSERT INTO hub_state VALUES (?, ?)", "a", 1)
        storage.exec("INSERT INTO hub_state VALUES (?, ?)", "b", 2)
    assert len(other_connection_sees(path, "SELECT name FROM hub_state")) == 2
    with pytest.raises(RuntimeError), storage.transaction():
        storage.exec("INSERT INTO hub_state VALUES (?, ?)", "c", 3)
        raise RuntimeError("rolled back")
    assert len(storage.exec("SELECT name FROM hub_state")) == 2
    storage.close()
