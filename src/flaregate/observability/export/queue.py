"""The bounded queue every exporter sends from: batches, retries with backoff, drops.

Items wait here until the exporter's interval has passed (or a full batch is ready). A
batch that fails stays at the head and is tried again after ``base * 2**n`` seconds (at
most 60); after ``max_attempts`` it is dropped. When the queue is full, new items are
dropped instead of queued. Every drop is counted, so an operator sees what an unreachable
target cost without the queue ever growing.
"""

from __future__ import annotations

from collections import deque
from typing import Any

MAX_BACKOFF_SECONDS = 60.0


class ExportQueue:
    def __init__(self, capacity: int, batch_size: int, interval: float, *, max_attempts: int = 5,
                 retry_base_seconds: float = 1.0) -> None:
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval = interval
        self._max_attempts = max_attempts
        self._retry_base = retry_base_seconds
        self._items: deque[Any] = deque()
        self._attempts = 0  # failed attempts of the batch at the head
        self.next_at: float | None = None  # when the next batch may go; None: nothing waits
        self.dropped = 0  # items never sent: the queue was full, or their batch gave up
        self.sent = 0
        self.failures = 0  # failed sends (each retried or, at the last attempt, dropped)
        self.last_error: str | None = None

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, items: list[Any], now: float) -> None:
        room = self.capacity - len(self._items)
        if room < len(items):
            self.dropped += len(items) - max(0, room)
            items = items[:max(0, room)]
        if not items:
            return
        self._items.extend(items)
        if self.next_at is None:
            self.next_at = now + self.interval
        if len(self._items) >= self.batch_size and not self._attempts:
            self.next_at = min(self.next_at, now)  # a full batch need not wait for the timer

    def due(self, now: float) -> bool:
        return bool(self._items) and self.next_at is not None and now >= self.next_at

    def batch(self) -> list[Any]:
        """The head batch (it stays queued until :meth:`sent_ok` or the last failure)."""
        return [self._items[i] for i in range(min(self.batch_size, len(self._items)))]

    def sent_ok(self, count: int, now: float) -> None:
        for _ in range(min(count, len(self._items))):
            self._items.popleft()
        self.sent += count
        self._attempts = 0
        self._reschedule(now)

    def failed(self, count: int, now: float, error: str, *, retry: bool = True) -> None:
        """A failed send of the head batch of ``count``: retried later, or dropped (counted)
        at the last attempt or when the target said retrying cannot help (``retry=False``)."""
        self.failures += 1
        self.last_error = error[:200]
        self._attempts += 1
        if not retry or self._attempts >= self._max_attempts:
            for _ in range(min(count, len(self._items))):
                self._items.popleft()
            self.dropped += count
            self._attempts = 0
            self._reschedule(now)
            return
        self.next_at = now + min(MAX_BACKOFF_SECONDS, self._retry_base * 2 ** (self._attempts - 1))

    def _reschedule(self, now: float) -> None:
        if not self._items:
            self.next_at = None
        elif len(self._items) >= self.batch_size:
            self.next_at = now
        else:
            self.next_at = now + self.interval

    def status(self) -> dict[str, Any]:
        return {"queued": len(self._items), "capacity": self.capacity, "sent": self.sent,
                "dropped": self.dropped, "failures": self.failures, "last_error": self.last_error}
