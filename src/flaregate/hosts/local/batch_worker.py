"""Runs batches on the local host: a task per batch over the job store's SQLite (in the
files directory, so replicas that share it share the leases), resumed at start-up and
picked up again by a periodic sweep when the replica that held it died (its lease ran out)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from ...batches.api import Batches
from ...batches.store import JobStore

log = logging.getLogger("flaregate.batches")


class LocalJobClient:
    def __init__(self, store: JobStore) -> None:
        self._store = store

    async def call(self, owner: str, op: str, args: dict[str, Any]) -> Any:
        return self._store.call(op, args)


class LocalBatchWorker:
    def __init__(self, batches: Batches, jobs: LocalJobClient) -> None:
        self._batches = batches
        self._jobs = jobs
        self._holder = "replica-" + secrets.token_hex(6)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        batches.wake = self.wake

    def wake(self, owner: str, batch_id: str) -> None:
        task = self._running.get(batch_id)
        if task is None or task.done():
            self._running[batch_id] = asyncio.ensure_future(self._run(owner, batch_id))

    async def _run(self, owner: str, batch_id: str) -> None:
        try:
            await self._batches.runner.run(owner, batch_id, self._holder)
        except Exception:
            log.exception("batch %s stopped; the sweep resumes it", batch_id)
        finally:
            self._running.pop(batch_id, None)

    def start(self) -> None:
        self._sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        """Resume what is unfinished now (a restart), then look again now and then (another
        replica's lease may run out)."""
        every = max(1.0, self._batches.settings.lease_seconds / 2)
        while True:
            try:
                for batch in await self._jobs.call("", "batches.active", {}):
                    self.wake(batch["owner"], batch["id"])
                await self._batches.files.sweep("")  # one store holds every key's files
            except Exception:
                log.warning("the batch sweep failed", exc_info=True)
            await asyncio.sleep(every)

    async def stop(self) -> None:
        tasks = [t for t in (self._sweeper, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
