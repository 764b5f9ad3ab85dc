"""Runs a batch: validates its input file into one checkpoint row per line, sends each line
through the gateway's one pipeline as a request of the batch's key (``LineRunner``: its
routing, cache, guardrails, limits, request log tagged ``batch_id``), writes each result
once, and assembles the output and error files at the end.

- A rate-limited line (429 ``rate_limit_exceeded``, or the provider's 429) waits its
  ``Retry-After`` and is sent again; it does not fail. A budget exhausted
  (``budget_exceeded``) fails that line and every line still pending with the same error.
- The batch leaves the key's interactive traffic its share: it pauses while fewer than
  ``1 - BATCH_MAX_SHARE`` of the key's requests remain, until the limit resets.
- Durable: a line is pending until its result is checkpointed; after a crash the batch
  resumes with the pending ones. A line that was in flight at the crash is sent again: if
  it reached the provider, its cost was counted then and is counted again (budgets count
  real spend). One runner per batch at a time: a lease in the job store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..http import Response
from ..ports import BlobStore, Clock, JobStoreClient
from ..security.access import Principal
from .jsonl import check_file
from .records import BatchChanges, BatchRecord, LineError, LineResult, PendingLine
from .settings import BatchSettings

log = logging.getLogger("flaregate.batches")

# (endpoint path, the line's body, the key, the batch id) -> the pipeline's answer and the
# headers every answer of that request carries (the limits' x-ratelimit-*).
LineRunner = Callable[[str, bytes, Principal, str], Awaitable[tuple[Response, dict[str, str]]]]
PrincipalLookup = Callable[[str, str], Awaitable[Principal | None]]
Sleep = Callable[[float], Awaitable[None]]

RESULT_PAGE = 200  # output lines written per store read
LINE_PAGE = 50  # lines taken per store read (a revoked key stops its batch within one)
MAX_RESULT_BYTES = 1_900_000  # a checkpoint row stays within a Durable Object's 2 MB row
_RATE_LIMITED = frozenset({"rate_limit_exceeded", "upstream_rate_limited", "overloaded"})


def output_file_ids(batch_id: str) -> tuple[str, str]:
    """The output and error files' ids: fixed per batch, so a finalisation that runs again
    after a crash replaces what it wrote, never adds a second copy."""
    suffix = batch_id.removeprefix("batch_")
    return f"file-out{suffix}", f"file-err{suffix}"


def request_line_id(batch_id: str, line: int) -> str:
    return "batch_req_" + hashlib.sha256(f"{batch_id}:{line}".encode()).hexdigest()[:24]


def _error_result(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


class _Stop(Exception):
    """The batch stops taking lines (cancelled, expired, its key or its lease lost)."""


class BatchRunner:
    def __init__(self, settings: BatchSettings, jobs: JobStoreClient, blobs: BlobStore, clock: Clock,
                 run_line: LineRunner, principal_of: PrincipalLookup, sleep: Sleep = asyncio.sleep) -> None:
        self.settings = settings
        self.jobs = jobs
        self.blobs = blobs
        self.clock = clock
        self.run_line = run_line
        self.principal_of = principal_of
        self.sleep = sleep
        self._lost_leases: set[str] = set()  # batches another holder took over from this one

    async def _update(self, owner: str, batch_id: str, changes: BatchChanges,
                      from_statuses: list[str] | None = None) -> BatchRecord | None:
        batch: BatchRecord | None = await self.jobs.call(owner, "batches.update", {
            "id": batch_id, "changes": changes, "from": from_statuses})
        return batch

    async def _get(self, owner: str, batch_id: str) -> BatchRecord | None:
        batch: BatchRecord | None = await self.jobs.call(owner, "batches.get", {"id": batch_id})
        return batch

    # -- the whole batch (the local host runs this in a task) --------------------------------
    async def run(self, owner: str, batch_id: str, holder: str, max_lines: int | None = None) -> bool:
        """Run the batch while this holder keeps its lease; with ``max_lines``, at most that
        many lines (one edge alarm's slice). True when the batch is finished."""
        lease = self.settings.lease_seconds
        if not await self._claim(owner, batch_id, holder):
            return False
        self._lost_leases.discard(batch_id)
        renew = asyncio.ensure_future(self._renew(owner, batch_id, holder, lease))
        try:
            return await self._advance(owner, batch_id, holder, max_lines)
        finally:
            renew.cancel()
            await self.jobs.call(owner, "lease.release", {"id": batch_id, "holder": holder})

    async def _claim(self, owner: str, batch_id: str, holder: str) -> bool:
        now = self.clock.now()
        claimed: bool = await self.jobs.call(owner, "lease.claim", {
            "id": batch_id, "holder": holder, "now": now, "until": now + self.settings.lease_seconds})
        return claimed

    async def _renew(self, owner: str, batch_id: str, holder: str, lease: float) -> None:
        while True:
            await asyncio.sleep(lease / 3)
            try:
                if not await self._claim(owner, batch_id, holder):
                    # Held past its lease (a pause longer than it): another runner has the
                    # batch now, so this one stops taking lines.
                    log.warning("batch %s: the lease went to another runner; this one stops", batch_id)
                    self._lost_leases.add(batch_id)
                    return
            except Exception:
                log.warning("renewing the lease of batch %s failed", batch_id, exc_info=True)

    async def _advance(self, owner: str, batch_id: str, holder: str, max_lines: int | None) -> bool:
        batch = await self._get(owner, batch_id)
        if batch is None or batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return True
        if batch["status"] == "validating":
            batch = await self._validate(owner, batch)
            if batch is None or batch["status"] == "failed":
                return True
        if batch["status"] in ("in_progress", "cancelling"):
            done = await self._run_lines(owner, batch, max_lines)
            if not done:
                return False
        await self._finalize(owner, batch_id)
        return True

    # -- validation --------------------------------------------------------------------------
    async def _validate(self, owner: str, batch: BatchRecord) -> BatchRecord | None:
        batch_id = batch["id"]
        await self.jobs.call(owner, "lines.clear", {"batch_id": batch_id})  # a validation cut short starts over
        chunks = await self.blobs.open(batch["input_file_id"])
        now = int(self.clock.now())
        if chunks is None:
            errors: list[LineError] = [{"code": "invalid_file", "message": f"The input file {batch['input_file_id']} is gone.",
                       "param": "input_file_id", "line": None}]
            return await self._update(owner, batch_id, {"status": "failed", "failed_at": now,
                                                        "errors": {"object": "list", "data": errors}})

        async def add(rows: list[tuple[int, str, str]]) -> None:
            await self.jobs.call(owner, "lines.add", {"batch_id": batch_id, "rows": [list(r) for r in rows]})

        checked = await check_file(chunks, batch["endpoint"], self.settings.line_max_bytes,
                                   self.settings.max_lines, add)
        if checked.errors:
            await self.jobs.call(owner, "lines.clear", {"batch_id": batch_id})
            return await self._update(owner, batch_id, {"status": "failed", "failed_at": now,
                                                        "errors": {"object": "list", "data": checked.errors}})
        if checked.rows:
            await add(checked.rows)
        return await self._update(owner, batch_id, {"status": "in_progress", "in_progress_at": now},
                                  ["validating"]) or None

    # -- the lines ---------------------------------------------------------------------------
    async def _run_lines(self, owner: str, batch: BatchRecord, max_lines: int | None) -> bool:
        """Run pending lines until none is left (True), or the slice is used up (False)."""
        batch_id, endpoint = batch["id"], batch["endpoint"]
        principal = await self.principal_of(owner, endpoint)
        if principal is None:
            await self._key_gone(owner, batch_id)
            return True
        state = _RunState()
        queue: asyncio.Queue[PendingLine | None] = asyncio.Queue(maxsize=self.settings.concurrency * 2)
        state.principal = principal
        workers = [asyncio.ensure_future(self._worker(owner, batch_id, endpoint, queue, state))
                   for _ in range(self.settings.concurrency)]
        taken = 0
        exhausted = False
        try:
            after = -1
            while not state.stop:
                limit = LINE_PAGE if max_lines is None else min(LINE_PAGE, max_lines - taken)
                if limit <= 0:
                    break
                page: list[PendingLine] = await self.jobs.call(owner, "lines.pending", {"batch_id": batch_id, "after": after,
                                                                     "limit": limit})
                if not page:
                    exhausted = True
                    break
                current = await self._get(owner, batch_id)
                if current is None or current["status"] != "in_progress":
                    state.stop = "cancelled"
                    break
                if self.clock.now() >= current["expires_at"]:
                    state.stop = "expired"
                    break
                if after >= 0:  # a key revoked mid-batch stops it within a page of lines
                    found = await self.principal_of(owner, endpoint)
                    if found is None:
                        state.stop = "revoked"
                        break
                    state.principal = found
                for line in page:
                    if state.stop:
                        break
                    await queue.put(line)
                    taken += 1
                after = page[-1]["line"]
        finally:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers, return_exceptions=True)
        if state.stop == "budget":
            await self.jobs.call(owner, "lines.fail_pending", {"batch_id": batch_id, "result": state.budget_result})
            return True
        if state.stop == "expired":
            await self.jobs.call(owner, "lines.fail_pending", {"batch_id": batch_id, "result": _error_result(
                "batch_expired", "This line was not run before the batch's completion window ended.")})
            await self._update(owner, batch_id, {"_ending": "expired"})
            return True
        if state.stop == "lease_lost":
            return False  # not finished by this runner: the one that holds the lease finishes it
        if state.stop == "revoked":
            await self._key_gone(owner, batch_id)
            return True
        if state.stop == "cancelled":
            return True
        return exhausted

    async def _key_gone(self, owner: str, batch_id: str) -> None:
        await self.jobs.call(owner, "lines.fail_pending", {"batch_id": batch_id, "result": _error_result(
            "invalid_api_key", "The batch's gateway key is no longer usable (revoked, expired or not allowed this "
            "endpoint).")})

    async def _worker(self, owner: str, batch_id: str, endpoint: str,
                      queue: asyncio.Queue[PendingLine | None], state: _RunState) -> None:
        while True:
            line = await queue.get()
            if line is None:
                return
            if state.stop:
                continue
            if batch_id in self._lost_leases:
                state.stop = "lease_lost"
                continue
            if await self.jobs.call(owner, "batches.status", {"id": batch_id}) != "in_progress":
                state.stop = state.stop or "cancelled"
                continue
            try:
                assert state.principal is not None
                result, ok = await self._one(endpoint, line, state.principal, batch_id, state)
            except _Stop:
                continue
            except Exception:
                log.exception("batch %s line %s failed in the gateway", batch_id, line["line"])
                result, ok = _error_result("internal_error", "The gateway failed to run this line."), False
            await self.jobs.call(owner, "lines.record", {"batch_id": batch_id, "line": line["line"],
                                                         "state": "ok" if ok else "failed", "result": result})

    async def _one(self, endpoint: str, line: PendingLine, principal: Principal, batch_id: str,
                   state: _RunState) -> tuple[str, bool]:
        body = line["body"].encode()
        parsed = json.loads(body)
        if parsed.get("stream") is True:
            return _error_result("invalid_request", "Streaming ('stream': true) is not supported in a batch."), False
        waits = 0
        while True:
            await state.wait_turn(self.clock, self.sleep)
            if state.stop:
                raise _Stop
            response, out = await self.run_line(endpoint, body, principal, batch_id)
            payload = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b""
            code = _error_code(payload) if response.status >= 400 else None
            if response.status in (429, 503) and code in _RATE_LIMITED and waits < self.settings.max_rate_limit_waits:
                waits += 1
                state.pause_for(self.clock, _seconds(response.headers.get("retry-after"), 1.0))
                continue
            state.note_limits(self.clock, out, self.settings.max_share)
            break
        try:
            answer: Any = json.loads(payload) if payload else None
        except ValueError:
            answer = payload.decode("utf-8", "replace")
        result = json.dumps({"status_code": response.status, "request_id": out.get("x-request-id"), "body": answer},
                            separators=(",", ":"))
        if len(result) > MAX_RESULT_BYTES:
            return _error_result("response_too_large", f"The answer is over {MAX_RESULT_BYTES} bytes."), False
        if code == "budget_exceeded":
            state.stop = "budget"
            state.budget_result = result
        return result, 200 <= response.status < 300

    # -- the end -----------------------------------------------------------------------------
    async def _finalize(self, owner: str, batch_id: str) -> None:
        batch = await self._update(owner, batch_id, {"status": "finalizing", "finalizing_at": int(self.clock.now())},
                                   ["in_progress", "finalizing"])
        current = batch or await self._get(owner, batch_id)
        if current is None:
            return
        ending = current.get("_ending") or ("cancelled" if current["status"] == "cancelling" else "completed")
        output_id, error_id = output_file_ids(batch_id)
        now = int(self.clock.now())
        ids: dict[str, str | None] = {}
        for state, file_id, field in (("ok", output_id, "output_file_id"), ("failed", error_id, "error_file_id")):
            size = await self.blobs.put(file_id, self._results(owner, batch_id, state))
            if size == 0:
                await self.blobs.delete(file_id)
                ids[field] = None
                continue
            await self.jobs.call(owner, "files.put", {
                "owner": owner, "id": file_id, "filename": f"{batch_id}_{'output' if state == 'ok' else 'error'}.jsonl",
                "purpose": "batch_output", "bytes": size, "created_at": now, "expires_at": now + 30 * 86400})
            ids[field] = file_id
        changes: BatchChanges = {"status": ending, "output_file_id": ids["output_file_id"],
                                 "error_file_id": ids["error_file_id"]}
        changes.update(_ended_at(ending, now))
        await self._update(owner, batch_id, changes)

    async def _results(self, owner: str, batch_id: str, state: str) -> AsyncIterator[bytes]:
        after = -1
        while True:
            rows: list[LineResult] = await self.jobs.call(owner, "lines.results", {"batch_id": batch_id, "state": state, "after": after,
                                                                 "limit": RESULT_PAGE})
            if not rows:
                return
            out = bytearray()
            for row in rows:
                result = json.loads(row["result"])
                line = {"id": request_line_id(batch_id, row["line"]), "custom_id": row["custom_id"],
                        "response": result if "status_code" in result else None,
                        "error": result.get("error") if "status_code" not in result else None}
                out += json.dumps(line, separators=(",", ":")).encode() + b"\n"
            yield bytes(out)
            after = rows[-1]["line"]


class _RunState:
    """What the workers of one run share: why they stop, and until when they pause."""

    __slots__ = ("stop", "budget_result", "paused_until", "principal")

    def __init__(self) -> None:
        self.principal: Principal | None = None  # the batch key's, looked up again each page
        self.stop = ""
        self.budget_result = ""
        self.paused_until = 0.0

    def pause_for(self, clock: Clock, seconds: float) -> None:
        self.paused_until = max(self.paused_until, clock.monotonic() + min(seconds, 300.0))

    async def wait_turn(self, clock: Clock, sleep: Sleep) -> None:
        while not self.stop:
            left = self.paused_until - clock.monotonic()
            if left <= 0:
                return
            await sleep(min(left, 1.0))

    def note_limits(self, clock: Clock, out: dict[str, str], share: float) -> None:
        """Pause while the key's remaining requests are below what interactive traffic keeps."""
        if share >= 1.0:
            return
        try:
            limit = float(out["x-ratelimit-limit-requests"])
            remaining = float(out["x-ratelimit-remaining-requests"])
        except (KeyError, ValueError):
            return
        if remaining < limit * (1.0 - share):
            self.pause_for(clock, _seconds(out.get("x-ratelimit-reset-requests"), 1.0))


def _ended_at(ending: str, now: int) -> BatchChanges:
    """The ``<ending>_at`` field of the way a batch ended."""
    if ending == "expired":
        return {"expired_at": now}
    if ending == "cancelled":
        return {"cancelled_at": now}
    if ending == "failed":
        return {"failed_at": now}
    return {"completed_at": now}


def _error_code(payload: bytes) -> str | None:
    try:
        error = json.loads(payload).get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _seconds(value: str | None, default: float) -> float:
    """Seconds from ``Retry-After`` (``"2"``) or OpenAI's reset format (``"1m30s"``, ``"0.5s"``, ``"20ms"``)."""
    if not value:
        return default
    try:
        return max(0.05, float(value))
    except ValueError:
        pass
    total, number = 0.0, ""
    text = value.strip()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
        elif text.startswith("ms", i):
            total += float(number or 0) / 1000
            number, i = "", i + 1
        elif ch in "hms":
            total += float(number or 0) * {"h": 3600, "m": 60, "s": 1}[ch]
            number = ""
        else:
            return default
        i += 1
    return max(0.05, total) if total else default

