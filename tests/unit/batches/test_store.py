"""The job store over real SQLite: a line's result is written once, leases exclude each
other, and a key sees only its own files and batches."""

from __future__ import annotations

import sqlite3
from typing import Any

from flaregate.batches.store import JobStore


class _Sqlite:
    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", isolation_level=None)
        self._db.row_factory = sqlite3.Row

    def exec(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(sql, params).fetchall()]


def _batch(store: JobStore, owner: str = "k1") -> None:
    store.call("batches.create", {"owner": owner, "batch": {"id": "batch_1", "created_at": 1, "status": "in_progress",
                                                             "expires_at": 10**10}})
    store.call("lines.add", {"batch_id": "batch_1", "rows": [[i, f"c{i}", "{}"] for i in range(1, 61)]})


def test_a_line_result_is_written_once_and_counted():
    store = JobStore(_Sqlite())
    _batch(store)
    assert store.call("lines.record", {"batch_id": "batch_1", "line": 3, "state": "ok", "result": "first"})
    assert not store.call("lines.record", {"batch_id": "batch_1", "line": 3, "state": "failed", "result": "again"})
    rows = store.call("lines.results", {"batch_id": "batch_1", "state": "ok", "limit": 10})
    assert [(r["line"], r["result"]) for r in rows] == [(3, "first")]
    store.call("lines.fail_pending", {"batch_id": "batch_1", "result": "budget"})
    counts = store.call("batches.get", {"id": "batch_1"})["request_counts"]
    assert counts == {"total": 60, "completed": 1, "failed": 59}
    assert store.call("lines.pending", {"batch_id": "batch_1", "limit": 10}) == []


def test_a_lease_excludes_another_holder_until_it_runs_out():
    store = JobStore(_Sqlite())
    _batch(store)
    assert store.call("lease.claim", {"id": "batch_1", "holder": "a", "now": 100, "until": 130})
    assert not store.call("lease.claim", {"id": "batch_1", "holder": "b", "now": 110, "until": 140})
    assert store.call("lease.claim", {"id": "batch_1", "holder": "a", "now": 120, "until": 150})  # renewed
    assert store.call("lease.claim", {"id": "batch_1", "holder": "b", "now": 151, "until": 181})  # a died
    store.call("lease.release", {"id": "batch_1", "holder": "a"})  # a's late release changes nothing
    assert not store.call("lease.claim", {"id": "batch_1", "holder": "a", "now": 152, "until": 182})


def test_files_and_batches_are_the_owners_alone():
    store = JobStore(_Sqlite())
    _batch(store, "k1")
    store.call("files.begin", {"owner": "k1", "id": "file-1", "filename": "a", "purpose": "batch", "created_at": 1,
                               "now": 1, "max_files": 5})
    store.call("files.commit", {"id": "file-1", "bytes": 10})
    assert store.call("files.get", {"owner": "k2", "id": "file-1", "now": 2}) is None
    assert not store.call("files.delete", {"owner": "k2", "id": "file-1"})
    assert store.call("files.get", {"owner": "k1", "id": "file-1", "now": 2})["bytes"] == 10
    assert store.call("batches.get", {"owner": "k2", "id": "batch_1"}) is None
    assert store.call("batches.cancel", {"owner": "k2", "id": "batch_1", "now": 3}) is None
    assert store.call("batches.list", {"owner": "k2", "limit": 10}) == []


def test_two_uploads_begun_with_the_same_room_cannot_both_be_stored_over_the_quota():
    store = JobStore(_Sqlite())
    for file_id in ("file-a", "file-b"):  # both begin before either is stored: each sees 100 bytes of room
        begun = store.call("files.begin", {"owner": "k1", "id": file_id, "filename": "x", "purpose": "batch",
                                           "created_at": 1, "now": 1, "max_files": 5})
        assert begun["used"] == 0
    assert store.call("files.commit", {"id": "file-a", "bytes": 70, "owner": "k1", "now": 2, "quota": 100})["ok"]
    refused = store.call("files.commit", {"id": "file-b", "bytes": 70, "owner": "k1", "now": 2, "quota": 100})
    assert refused == {"ok": False, "used": 70}
    assert store.call("files.get", {"owner": "k1", "id": "file-b", "now": 3}) is None  # not stored
    assert store.call("files.commit", {"id": "file-b", "bytes": 30, "owner": "k1", "now": 2, "quota": 100})["ok"]
