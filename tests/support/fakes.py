"""Small in-memory stand-ins for the core's ports, for unit tests of the core."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start
        self.m = 1000.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.m

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.m += seconds


class MemorySql:
    """SqlStorage over an in-memory sqlite3 database (the real SQL engine)."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", isolation_level=None)
        self.db.row_factory = sqlite3.Row

    def exec(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(sql, params)]


class MemoryKV:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.data: dict[str, tuple[str, float]] = {}
        self.fail = False

    async def get(self, key: str) -> str | None:
        if self.fail:
            raise ConnectionError("kv down")
        value = self.data.get(key)
        return value[0] if value and value[1] > self.clock.now() else None

    async def put(self, key: str, value: str, ttl_seconds: int) -> None:
        if self.fail:
            raise ConnectionError("kv down")
        self.data[key] = (value, self.clock.now() + ttl_seconds)

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


class RecordingBroadcaster:
    def __init__(self, subscribers: int = 1) -> None:
        self.sent: list[str] = []
        self.subscribers = subscribers

    def broadcast(self, text: str) -> None:
        self.sent.append(text)

    def subscriber_count(self) -> int:
        return self.subscribers


class RecordingScheduler:
    def __init__(self) -> None:
        self.at: list[float] = []

    async def schedule(self, at: float) -> None:
        self.at.append(at)


class InlineTasks:
    """Background tasks collected, to be awaited by the test when it chooses."""

    def __init__(self) -> None:
        self.pending: list[Any] = []

    def run(self, job: Any) -> None:
        self.pending.append(job)

    async def drain(self) -> None:
        while self.pending:
            jobs, self.pending = self.pending, []
            await asyncio.gather(*jobs)

    def __del__(self) -> None:
        for job in self.pending:  # never drained by the test: close quietly
            if hasattr(job, "close"):
                job.close()
