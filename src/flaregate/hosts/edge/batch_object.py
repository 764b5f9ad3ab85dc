"""The bodies of the two batch Durable Objects.

``BatchStore`` (one per gateway key) holds that key's files catalogue, batches and per-line
checkpoints (``batches/store.py`` over its SQLite) and drives its batches from alarms: each
alarm run takes a slice of every unfinished batch (``BATCH_SLICE_LINES`` lines), checkpoints
each line's result as it lands, and arms the next alarm. An alarm lost in a restart of the
runtime is armed again by the next call that touches the object (a status poll).

The lines themselves run in ``BatchLane`` objects (``<batch id>:<n>``), as many as
``BATCH_CONCURRENCY / LANE_CONCURRENCY``, each given at most ``LANE_CONCURRENCY`` lines at a
time: one invocation holds at most six connections that wait for headers, so the batch's
concurrency is fanned out over several objects, each with its own connections, rather than
sixteen calls queued in one. A lane runs its line through the Worker's own pipeline, built
in its isolate (``gateway_for``): the batch key's routing, limits, cache, guardrails,
request log and analytics, the same code the HTTP route calls."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any

from ...batches.runner import BatchRunner
from ...batches.store import JobStore
from ...clock import SystemClock
from ...errors import unauthorized
from ...http import Response
from ...security.access import Principal
from . import event_loop, rpc
from .blobs import R2BlobStore
from .ports import SCOPE_VAR, DurableSql, bind
from .worker import gateway_for

log = logging.getLogger("flaregate.edge")

LANE_CONCURRENCY = 5  # lines in flight in one lane (six connections, one spare)
NEXT_SLICE_MS = 10  # the next alarm, right after this one
HOLDER = "alarm"  # one object per key: its alarm is the only runner
LANE_BINDING = "BATCH_LANE"
_PASSED_HEADERS = ("retry-after", "content-type")


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


class _DetachedTasks:
    """``ctx.waitUntil`` in a lane: the work (usage settlement, the analytics batch) runs on
    in the object after the call returns, as a Durable Object stays alive while it has work."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[Any]] = set()

    def waitUntil(self, job: Awaitable[Any]) -> None:  # noqa: N802 - the runtime's name
        task = asyncio.ensure_future(job)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


class _Lanes:
    """Sends each line to the least busy lane of its batch, over RPC."""

    def __init__(self, env: Any, lanes: int) -> None:
        self._namespace = getattr(rpc.raw_env(env), LANE_BINDING)
        self._busy: dict[str, list[int]] = {}
        self._lanes = lanes

    async def run_line(self, endpoint: str, body: bytes, principal: Principal,
                       batch_id: str) -> tuple[Response, dict[str, str]]:
        busy = self._busy.setdefault(batch_id, [0] * self._lanes)
        lane = busy.index(min(busy))
        busy[lane] += 1
        try:
            stub = self._namespace.getByName(f"{batch_id}:{lane}")
            answer = await rpc.call(stub, "run_line", endpoint, body.decode(), principal.key_id, batch_id)
        finally:
            busy[lane] -= 1
        return Response(int(answer["status"]), dict(answer["headers"]), str(answer["body"]).encode()), \
            dict(answer["out"])


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
            lanes = _Lanes(self._env, -(-settings.concurrency // LANE_CONCURRENCY))
            runner = BatchRunner(settings, _Direct(self.store), R2BlobStore(), SystemClock(), lanes.run_line,
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


class BatchLaneBody:
    """Runs one line at a time per call (several calls at once) through the pipeline."""

    def __init__(self, ctx: Any, env: Any) -> None:
        event_loop.install(SCOPE_VAR)
        self._env = env
        self._tasks = _DetachedTasks()

    async def run_line(self, endpoint: str, body: str, key_id: str, batch_id: str) -> dict[str, Any]:
        with bind(self._env, self._tasks):
            gateway = gateway_for(self._env)
            principal = await gateway.access.principal_by_id(key_id, endpoint)
            if principal is None:
                error = unauthorized("The batch's gateway key is no longer usable.")
                return {"status": error.status, "headers": {}, "body": json.dumps(error.body()), "out": {}}
            response, out = await gateway.batch_line(endpoint, body.encode(), principal, batch_id)
            payload = response.body if isinstance(response.body, bytes | bytearray) else \
                b"".join([chunk async for chunk in response.body])
        return {"status": response.status, "body": bytes(payload).decode("utf-8", "replace"), "out": out,
                "headers": {k: v for k, v in response.headers.items() if k in _PASSED_HEADERS}}
