"""In-process implementations of the task, object-client, broadcast and scheduler ports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ...hub.aggregator import MetricsHub
from ...ratelimits.limiter import RateLimiter
from ...security.store import SecurityStore

log = logging.getLogger("flaregate.local")


class AsyncioTasks:
    """Background work as asyncio tasks; references are kept so none is collected early."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def run(self, job: Awaitable[None]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed", exc_info=task.exception())

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class LocalRateLimiterClient:
    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def check(self, key: str, policy: dict[str, Any], cost: float) -> dict[str, Any]:
        return self._limiter.check(key, policy, cost)

    # One object per partition, as on the edge, all over the one SQLite table.
    async def acquire(self, name: str, checks: list[dict[str, Any]]) -> dict[str, Any]:
        return self._limiter.partition(name).acquire(checks)

    async def reconcile(self, name: str, adjustments: list[dict[str, Any]]) -> dict[str, Any]:
        return self._limiter.partition(name).reconcile(adjustments)

    async def usage(self, name: str) -> dict[str, Any]:
        return self._limiter.partition(name).usage()

    async def reset(self, name: str, policy: str = "") -> dict[str, Any]:
        return self._limiter.partition(name).reset(policy)


class LocalHubClient:
    def __init__(self, hub: MetricsHub, feed: Any = None) -> None:
        self._hub = hub
        self._feed = feed  # with Redis: events go to the replicas' shared stream first

    async def publish(self, events: list[dict[str, Any]]) -> None:
        if self._feed is not None:
            await self._hub.export(events)  # this replica's own events: the feed brings everyone's
            await self._feed.publish(events)
        else:
            await self._hub.record(events)

    async def snapshot(self) -> dict[str, Any]:
        return self._hub.snapshot()

    async def health(self) -> dict[str, Any]:
        return self._hub.health_summary()

    async def analytics(self, window: str | None) -> dict[str, Any]:
        return self._hub.analytics(window)

    async def prometheus(self) -> str:
        return self._hub.prometheus()

    async def logs(self, params: dict[str, str]) -> dict[str, Any]:
        return self._hub.logs.answer(params)


class LocalSecurityClient:
    def __init__(self, store: SecurityStore) -> None:
        self._store = store

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        return self._store.call(op, args)


class Subscriber:
    """One WebSocket subscriber: a bounded outbox drained by the connection's sender."""

    def __init__(self, limit: int) -> None:
        self.outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=limit)
        self.dropped = asyncio.Event()
        self.close_reason: tuple[int, str] | None = None  # set when the server closes it


class SubscriberSet:
    """The hub's broadcaster locally. A subscriber whose outbox is full is too slow: it is
    dropped rather than allowed to hold back the others."""

    def __init__(self, outbox_limit: int = 64) -> None:
        self._limit = outbox_limit
        self._subscribers: set[Subscriber] = set()

    def add(self) -> Subscriber:
        subscriber = Subscriber(self._limit)
        self._subscribers.add(subscriber)
        return subscriber

    def remove(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def broadcast(self, text: str) -> None:
        for subscriber in list(self._subscribers):
            self.send(subscriber, text)

    def send(self, subscriber: Subscriber, text: str) -> None:
        try:
            subscriber.outbox.put_nowait(text)
        except asyncio.QueueFull:
            self.remove(subscriber)
            subscriber.dropped.set()

    def subscriber_count(self) -> int:
        return len(self._subscribers)


class PeriodicTask:
    """Runs ``job`` every ``interval`` seconds until stopped; a failing run is logged and
    the next one still happens (the local stand-in for the hub's compaction alarm)."""

    def __init__(self, interval: float, job: Callable[[], Any]) -> None:
        self._interval = interval
        self._job = job
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self._job()
            except Exception:
                log.warning("periodic task failed", exc_info=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class AsyncioScheduler:
    """Wakes the hub with ``loop.call_later``, the local stand-in for a DO alarm."""

    def __init__(self, tasks: AsyncioTasks) -> None:
        self._tasks = tasks
        self.target: Callable[[], Awaitable[None]] | None = None

    async def schedule(self, at: float) -> None:
        delay = max(0.0, at - time.time())
        asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        if self.target is not None:
            self._tasks.run(self.target())
