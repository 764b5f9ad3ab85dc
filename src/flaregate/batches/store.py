"""The job store: the files catalogue, the batches and one checkpoint row per batch line,
written once over the SQL port (``exec(sql, *params) -> rows``). Locally one SQLite file
(in the files directory, so replicas that share it share the catalogue and the leases); on
the edge a Durable Object per gateway key holds the same tables.

Every operation is one call (:meth:`JobStore.call`) with JSON-able arguments, so a Durable
Object can forward it unchanged. A line's result is written once: ``UPDATE ... WHERE state
= 'pending'`` is the checkpoint, and a second write of the same line changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..ports import SqlStorage
from .records import (
    ActiveBatch,
    BatchCancel,
    BatchCreate,
    BatchesList,
    BatchRecord,
    BatchRef,
    BatchUpdate,
    CommitAnswer,
    FileCommit,
    FileId,
    FileRecord,
    FilesBegin,
    FilesExpired,
    FilesList,
    FilesPut,
    LeaseClaim,
    LeaseRelease,
    LineRecord,
    LineResult,
    LinesAdd,
    LinesFail,
    LinesOf,
    LinesPage,
    NoArgs,
    OwnedFile,
    PendingLine,
    RequestCounts,
    UploadRoom,
)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS batch_files (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, filename TEXT NOT NULL, purpose TEXT NOT NULL,
        bytes INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, expires_at INTEGER,
        status TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS batch_files_owner ON batch_files (owner, created_at)",
    """CREATE TABLE IF NOT EXISTS batch_jobs (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, created_at INTEGER NOT NULL, status TEXT NOT NULL,
        data TEXT NOT NULL, lease_holder TEXT, lease_until REAL NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS batch_jobs_owner ON batch_jobs (owner, created_at)",
    """CREATE TABLE IF NOT EXISTS batch_lines (
        batch_id TEXT NOT NULL, line INTEGER NOT NULL, custom_id TEXT NOT NULL, body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending', result TEXT, PRIMARY KEY (batch_id, line))""",
)
FINAL = ("completed", "failed", "expired", "cancelled")
# Rows per INSERT: 4 parameters each, within a Durable Object's 100 bound parameters.
_ROWS_PER_INSERT = 25


def _file(row: dict[str, Any]) -> FileRecord:
    return {"id": row["id"], "owner": row["owner"], "filename": row["filename"], "purpose": row["purpose"],
            "bytes": row["bytes"], "created_at": row["created_at"], "expires_at": row["expires_at"],
            "status": row["status"]}


class JobStore:
    def __init__(self, sql: SqlStorage) -> None:
        self._sql = sql
        for statement in SCHEMA:
            sql.exec(statement)
        # Each handler reads its own op's arguments (records.py); they arrive as JSON.
        self._ops: dict[str, Callable[[Any], Any]] = {
            "files.begin": self._files_begin, "files.commit": self._files_commit, "files.abort": self._files_abort,
            "files.get": self._files_get, "files.list": self._files_list, "files.delete": self._files_delete,
            "files.expired": self._files_expired, "files.put": self._files_put,
            "batches.create": self._batches_create, "batches.get": self._batches_get,
            "batches.list": self._batches_list, "batches.update": self._batches_update,
            "batches.cancel": self._batches_cancel, "batches.status": self._batches_status, "batches.active": self._batches_active,
            "lines.add": self._lines_add, "lines.clear": self._lines_clear, "lines.pending": self._lines_pending,
            "lines.record": self._lines_record, "lines.fail_pending": self._lines_fail_pending,
            "lines.results": self._lines_results, "lease.claim": self._lease_claim,
            "lease.release": self._lease_release,
        }

    def call(self, op: str, args: dict[str, Any]) -> Any:
        handler = self._ops.get(op)
        if handler is None:
            raise ValueError(f"unknown job store operation {op!r}")
        return handler(args)

    # -- files -------------------------------------------------------------------------------
    def _files_begin(self, a: FilesBegin) -> UploadRoom:
        """Reserve a row for an upload, unless the owner is at its file count; returns what
        the owner's files use so far (the upload is counted against the quota as it arrives)."""
        row = self._sql.exec("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS used FROM batch_files "
                             "WHERE owner = ? AND (expires_at IS NULL OR expires_at > ?)", a["owner"], a["now"])[0]
        if row["n"] >= a["max_files"]:
            return {"ok": False, "count": row["n"], "used": row["used"]}
        self._sql.exec("INSERT INTO batch_files (id, owner, filename, purpose, created_at, expires_at, status) "
                       "VALUES (?, ?, ?, ?, ?, ?, 'uploading')", a["id"], a["owner"], a["filename"], a["purpose"],
                       a["created_at"], a.get("expires_at"))
        return {"ok": True, "count": row["n"], "used": row["used"]}

    def _files_commit(self, a: FileCommit) -> CommitAnswer:
        """Mark an upload stored, unless it would take its owner over ``quota`` (when given)
        with the files stored meanwhile: two uploads that began with the same room left are
        checked here, one at a time, so the quota holds however many run at once."""
        quota = a.get("quota")
        if quota is not None:
            used = self._sql.exec("SELECT COALESCE(SUM(bytes), 0) AS used FROM batch_files WHERE owner = ? "
                                  "AND id != ? AND status = 'processed' AND (expires_at IS NULL OR expires_at > ?)",
                                  a["owner"], a["id"], a["now"])[0]["used"]
            if used + a["bytes"] > quota:
                return {"ok": False, "used": used}
        self._sql.exec("UPDATE batch_files SET bytes = ?, status = 'processed' WHERE id = ?", a["bytes"], a["id"])
        return {"ok": True}

    def _files_abort(self, a: FileId) -> None:
        self._sql.exec("DELETE FROM batch_files WHERE id = ?", a["id"])

    def _files_put(self, a: FilesPut) -> None:
        """A file the gateway wrote itself (a batch's output or errors); written again, replaced."""
        self._sql.exec("INSERT OR REPLACE INTO batch_files (id, owner, filename, purpose, bytes, created_at, "
                       "expires_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'processed')", a["id"], a["owner"],
                       a["filename"], a["purpose"], a["bytes"], a["created_at"], a.get("expires_at"))

    def _files_get(self, a: OwnedFile) -> FileRecord | None:
        rows = self._sql.exec("SELECT * FROM batch_files WHERE id = ? AND owner = ? AND status = 'processed' "
                              "AND (expires_at IS NULL OR expires_at > ?)", a["id"], a["owner"], a["now"])
        return _file(rows[0]) if rows else None

    def _files_list(self, a: FilesList) -> list[FileRecord]:
        order = "DESC" if a.get("order", "desc") == "desc" else "ASC"
        clauses = ["owner = ?", "status = 'processed'", "(expires_at IS NULL OR expires_at > ?)"]
        params: list[Any] = [a["owner"], a["now"]]
        if a.get("purpose"):
            clauses.append("purpose = ?")
            params.append(a["purpose"])
        if a.get("after"):
            after = self._sql.exec("SELECT created_at FROM batch_files WHERE id = ? AND owner = ?", a["after"],
                                   a["owner"])
            if after:
                cmp = "<" if order == "DESC" else ">"
                clauses.append(f"(created_at {cmp} ? OR (created_at = ? AND id {cmp} ?))")
                params += [after[0]["created_at"], after[0]["created_at"], a["after"]]
        sql = (f"SELECT * FROM batch_files WHERE {' AND '.join(clauses)} "
               f"ORDER BY created_at {order}, id {order} LIMIT ?")
        return [_file(r) for r in self._sql.exec(sql, *params, int(a["limit"]))]

    def _files_delete(self, a: OwnedFile) -> bool:
        found = self._sql.exec("SELECT id FROM batch_files WHERE id = ? AND owner = ? AND status = 'processed'",
                               a["id"], a["owner"])
        if not found:
            return False
        self._sql.exec("DELETE FROM batch_files WHERE id = ?", a["id"])
        return True

    def _files_expired(self, a: FilesExpired) -> list[str]:
        """Forget up to ``limit`` expired files (and uploads abandoned a day ago); returns
        their ids, whose bytes the caller deletes."""
        rows = self._sql.exec("SELECT id FROM batch_files WHERE (expires_at IS NOT NULL AND expires_at <= ?) "
                              "OR (status = 'uploading' AND created_at < ?) LIMIT ?", a["now"], a["now"] - 86400,
                              int(a.get("limit", 100)))
        ids = [r["id"] for r in rows]
        for file_id in ids:
            self._sql.exec("DELETE FROM batch_files WHERE id = ?", file_id)
        return ids

    # -- batches -----------------------------------------------------------------------------
    def _counts(self, batch_id: str) -> RequestCounts:
        counts: RequestCounts = {"total": 0, "completed": 0, "failed": 0}
        for row in self._sql.exec("SELECT state, COUNT(*) AS n FROM batch_lines WHERE batch_id = ? GROUP BY state",
                                  batch_id):
            counts["total"] += row["n"]
            if row["state"] == "ok":
                counts["completed"] += row["n"]
            elif row["state"] == "failed":
                counts["failed"] += row["n"]
        return counts

    def _batch(self, row: dict[str, Any]) -> BatchRecord:
        batch: BatchRecord = json.loads(row["data"])
        batch["status"] = row["status"]
        batch["request_counts"] = self._counts(row["id"])
        return batch

    def _batches_create(self, a: BatchCreate) -> None:
        batch = a["batch"]
        self._sql.exec("INSERT INTO batch_jobs (id, owner, created_at, status, data) VALUES (?, ?, ?, ?, ?)",
                       batch["id"], a["owner"], batch["created_at"], batch["status"], json.dumps(batch))

    def _batches_get(self, a: BatchRef) -> BatchRecord | None:
        if a.get("owner") is None:  # the runner's own read
            rows = self._sql.exec("SELECT * FROM batch_jobs WHERE id = ?", a["id"])
        else:
            rows = self._sql.exec("SELECT * FROM batch_jobs WHERE id = ? AND owner = ?", a["id"], a["owner"])
        if not rows:
            return None
        batch = self._batch(dict(rows[0]))
        batch["_owner"] = rows[0]["owner"]
        return batch

    def _batches_list(self, a: BatchesList) -> list[BatchRecord]:
        clauses, params = ["owner = ?"], [a["owner"]]
        after_id = a.get("after")
        if after_id:
            after = self._sql.exec("SELECT created_at FROM batch_jobs WHERE id = ? AND owner = ?", after_id,
                                   a["owner"])
            if after:
                clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
                params += [after[0]["created_at"], after[0]["created_at"], after_id]
        rows = self._sql.exec(f"SELECT * FROM batch_jobs WHERE {' AND '.join(clauses)} "
                              "ORDER BY created_at DESC, id DESC LIMIT ?", *params, int(a["limit"]))
        return [self._batch(dict(r)) for r in rows]

    def _batches_update(self, a: BatchUpdate) -> BatchRecord | None:
        """Merge ``changes`` into the batch; with ``from`` a batch in any other status is left
        as it is (a cancel that lost the race to completion). Returns the batch as it is now."""
        rows = self._sql.exec("SELECT * FROM batch_jobs WHERE id = ?", a["id"])
        if not rows:
            return None
        row = dict(rows[0])
        only_from = a.get("from")
        if only_from is not None and row["status"] not in only_from:
            return self._batch(row)
        data = json.loads(row["data"])
        data.update(a["changes"])
        status = data.get("status", row["status"])
        self._sql.exec("UPDATE batch_jobs SET status = ?, data = ? WHERE id = ?", status, json.dumps(data), a["id"])
        row.update(status=status, data=json.dumps(data))
        return self._batch(row)

    def _batches_status(self, a: BatchRef) -> str | None:
        """The status alone: what a runner reads before each line (a cancel stops it there)."""
        rows = self._sql.exec("SELECT status FROM batch_jobs WHERE id = ?", a["id"])
        return str(rows[0]["status"]) if rows else None

    def _batches_cancel(self, a: BatchCancel) -> BatchRecord | None:
        if not self._sql.exec("SELECT id FROM batch_jobs WHERE id = ? AND owner = ?", a["id"], a["owner"]):
            return None
        return self._batches_update({"id": a["id"], "from": ["validating", "in_progress"],
                                     "changes": {"status": "cancelling", "cancelling_at": a["now"]}})

    def _batches_active(self, a: NoArgs) -> list[ActiveBatch]:
        marks = ",".join("?" * len(FINAL))
        return [{"id": r["id"], "owner": r["owner"]} for r in self._sql.exec(f"SELECT id, owner FROM batch_jobs WHERE status NOT IN ({marks}) "
                                                "ORDER BY created_at", *FINAL)]

    # -- lines: one checkpoint row each ------------------------------------------------------
    def _lines_add(self, a: LinesAdd) -> None:
        rows = a["rows"]
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start:start + _ROWS_PER_INSERT]
            params: list[Any] = []
            for line, custom_id, body in chunk:
                params += [a["batch_id"], line, custom_id, body]
            values = ",".join("(?, ?, ?, ?)" for _ in chunk)
            self._sql.exec(f"INSERT OR IGNORE INTO batch_lines (batch_id, line, custom_id, body) VALUES {values}",
                           *params)

    def _lines_clear(self, a: LinesOf) -> None:
        self._sql.exec("DELETE FROM batch_lines WHERE batch_id = ?", a["batch_id"])

    def _lines_pending(self, a: LinesPage) -> list[PendingLine]:
        return [{"line": r["line"], "custom_id": r["custom_id"], "body": r["body"]} for r in self._sql.exec(
            "SELECT line, custom_id, body FROM batch_lines WHERE batch_id = ? AND state = 'pending' AND line > ? "
            "ORDER BY line LIMIT ?", a["batch_id"], int(a.get("after", -1)), int(a["limit"]))]

    def _lines_record(self, a: LineRecord) -> bool:
        before = self._sql.exec("SELECT state FROM batch_lines WHERE batch_id = ? AND line = ?", a["batch_id"],
                                a["line"])
        if not before or before[0]["state"] != "pending":
            return False  # written already: a line's result is written once
        self._sql.exec("UPDATE batch_lines SET state = ?, result = ? WHERE batch_id = ? AND line = ? "
                       "AND state = 'pending'", a["state"], a["result"], a["batch_id"], a["line"])
        return True

    def _lines_fail_pending(self, a: LinesFail) -> None:
        self._sql.exec("UPDATE batch_lines SET state = 'failed', result = ? WHERE batch_id = ? AND state = 'pending'",
                       a["result"], a["batch_id"])

    def _lines_results(self, a: LinesPage) -> list[LineResult]:
        return [{"line": r["line"], "custom_id": r["custom_id"], "result": r["result"]} for r in self._sql.exec(
            "SELECT line, custom_id, result FROM batch_lines WHERE batch_id = ? AND state = ? AND line > ? "
            "ORDER BY line LIMIT ?", a["batch_id"], a["state"], int(a.get("after", -1)), int(a["limit"]))]

    # -- the lease: one runner per batch at a time -------------------------------------------
    def _lease_claim(self, a: LeaseClaim) -> bool:
        self._sql.exec("UPDATE batch_jobs SET lease_holder = ?, lease_until = ? WHERE id = ? AND "
                       "(lease_holder IS NULL OR lease_holder = ? OR lease_until < ?)", a["holder"], a["until"],
                       a["id"], a["holder"], a["now"])
        rows = self._sql.exec("SELECT lease_holder FROM batch_jobs WHERE id = ?", a["id"])
        return bool(rows) and rows[0]["lease_holder"] == a["holder"]

    def _lease_release(self, a: LeaseRelease) -> None:
        self._sql.exec("UPDATE batch_jobs SET lease_holder = NULL, lease_until = 0 WHERE id = ? AND lease_holder = ?",
                       a["id"], a["holder"])
