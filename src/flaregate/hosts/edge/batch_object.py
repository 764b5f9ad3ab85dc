"""The body of the ``BatchStore`` Durable Object: one per gateway key, holding that key's
files catalogue, batches and per-line checkpoints (``batches/store.py`` over its SQLite),
and running its batches from alarms.

Each alarm run takes a slice of every unfinished batch (``BATCH_SLICE_LINES`` lines at most,
at most ``EDGE_CONCURRENCY`` in flight: one invocation holds at most six connections that
wait for headers), checkpoints each line's result as it lands, and arms the next alarm; the
work is fanned out over successive alarm invocations, each with its own connections. The
lines run through the Worker's own pipeline, built in this isolate (``gateway_for``): the
batch key's routing, limits, cache, guardrails, request log. An alarm lost in a restart of
the runtime is armed again by the next call that touches the object (a status poll)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from ...batches.runner import BatchRunner
from ...batches.store import JobStore
from ...clock import SystemClock
from . import event_loop
from .blobs import R2BlobStore
from .ports import SCOPE_VAR, DurableSql, bind
from .worker import gateway_for

log = logging.getLogger("flaregate.edge")

EDGE_CONCURRENCY = 5  # lines in flight in one alarm invocation (six connections, one spare)
NEXT_SLICE_MS = 10  # the next alarm, right after this one
HOLDER = "alarm"  # one object per key: its alarm is the only runner


class _AlarmTasks:
    """``ctx.waitUntil`` for the code that runs in an alarm: tasks the alarm awaits before it
    returns (what the pipeline hands to the background: settling usage, analytics)."""

    def __init__(self) -> None:
        self._pending: list[asyncio.Future[Any]] = []

    def waitUntil(self, job: Awaitable[Any]) -> None:  # noqa: N802 - the runtime's name
        self._pending.append(asyncio.ensure_future(job))

    async def drain(self) -> None:
        while self._pending:
            pending, self._pending = self._pending, []
            await asyncio.gather(*pending, return_exceptions=True)


class _Direct:
    """The job store client the alarm uses: this object's own store, no RPC."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    async def call(self, owner: str, op: str, args: dict[str, Any]) -> Any:
        return self._store.call(op, args)


class BatchStoreBody:
    def __init__(self, ctx: Any, env: Any) -> None:
        event_loop.install(SCOPE_VAR)
        self._ctx = ctx
        self._env = env
        self.store = JobStore(DurableSql(ctx.storage.sql, ctx.storage))

    def run_op(self, op: str, args: dict[str, Any]) -> Any:
        return self.store.call(op, args)

    async def wake(self) -> None:
        if await self._ctx.storage.getAlarm() is None:
            await self._ctx.storage.setAlarm(int(SystemClock().now() * 1000) + NEXT_SLICE_MS)

    async def alarm(self) -> None:
        tasks = _AlarmTasks()
        unfinished = False
        with bind(self._env, tasks):
            gateway = gateway_for(self._env)
            settings = gateway.settings.batches
            runner = BatchRunner(settings.model_copy(update={"concurrency": min(settings.concurrency,
                                                                                EDGE_CONCURRENCY)}),
                                 _Direct(self.store), R2BlobStore(), SystemClock(), gateway.batch_line,
                                 gateway.access.principal_by_id)
            for batch in self.store.call("batches.active", {}):
                try:
                    done = await runner.run(batch["owner"], batch["id"], HOLDER, max_lines=settings.slice_lines)
                except Exception:
                    log.exception("batch %s: an alarm slice failed; the next one resumes it", batch["id"])
                    done = False
                unfinished = unfinished or not done
            await gateway.analytics.flush()
            await tasks.drain()
        if unfinished:
            await self._ctx.storage.setAlarm(int(SystemClock().now() * 1000) + NEXT_SLICE_MS)
