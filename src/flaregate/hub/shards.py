"""N metrics-hub shards behind the one hub port: batches spread, reads fanned out and merged.

Ingestion: each analytics batch goes whole to one shard, round robin from a random start
per isolate, so one busy isolate's load spreads over every shard (sharding by isolate
would leave one shard per isolate, and under ``wrangler dev``, with one isolate, one
shard). A shard that fails or is slower than ``timeout`` keeps the batch in this
isolate's buffer for that shard (``buffer_batches`` at most), retried after the shard's
next batch goes through; past the bound the oldest batch is dropped and its events
counted, the count sent with the next batch that succeeds (``analytics_dropped``, in
/metrics and /health). This all runs in the background task of the publish: no request
ever waits on a shard.

Reads are a fan-out from the caller, not a coordinator object: a coordinator would be one
more object every read (and every dashboard tick) funnels through, and one more hop; the
reads are the operator's (/metrics, /v1/analytics, /v1/logs, /health), rare beside the
publishes, so N parallel calls per read cost little. Each shard answers with its parts
(``MetricsHub.parts``), merged and rendered by ``views.py``, the code one hub uses.
A shard that does not answer in time leaves the answer partial, said in ``shards``
(``{"answered": k, "of": n}``); no shard answering is the hub being unavailable.

``/v1/logs`` pages merge newest first across shards; a merged cursor names the shard and
its row, so every page continues each shard exactly where it stopped.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections import deque
from typing import Any, Protocol

from .request_logs import MAX_PAGE
from .views import (
    DROPPED_EVENT,
    merge,
    merge_prometheus,
    render_analytics,
    render_health_summary,
    render_snapshot,
)

log = logging.getLogger("flaregate.hub")


class HubShard(Protocol):
    """One shard as the sharded client reaches it (a Durable Object stub, or a hub in process)."""

    async def publish(self, events: list[dict[str, Any]]) -> None: ...

    async def parts(self, view: str, arg: str | None = None) -> dict[str, Any]: ...

    async def logs(self, params: dict[str, str]) -> dict[str, Any]: ...


class InProcessShard:
    """A hub in this process as a shard (tests, benches; the local host's one hub)."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub

    async def publish(self, events: list[dict[str, Any]]) -> None:
        await self.hub.record(events)

    async def parts(self, view: str, arg: str | None = None) -> dict[str, Any]:
        parts: dict[str, Any] = self.hub.parts(view, arg)
        return parts

    async def logs(self, params: dict[str, str]) -> dict[str, Any]:
        answer: dict[str, Any] = self.hub.logs.answer(params)
        return answer


class ShardsUnavailable(RuntimeError):
    """No shard answered: the hub is unavailable (the endpoints answer 503)."""


def _cursor(ts: float, shard: int, seq: int) -> str:
    return "s" + base64.urlsafe_b64encode(f"{ts!r}:{shard}:{seq}".encode()).decode().rstrip("=")


def _parse_cursor(text: str) -> tuple[float, int, int] | None:
    if not text.startswith("s"):
        return None
    try:
        raw = base64.urlsafe_b64decode(text[1:] + "=" * (-len(text[1:]) % 4)).decode()
        ts, shard, seq = raw.split(":")
        return float(ts), int(shard), int(seq)
    except Exception:
        return None


def _shard_cursor(ts: float, seq: int) -> str:
    """The store's own cursor format (request_logs._cursor)."""
    return base64.urlsafe_b64encode(f"{ts!r}:{seq}".encode()).decode().rstrip("=")


_BAD_CURSOR = {"error": {"message": "Invalid cursor; pass next_cursor from the previous page.", "param": "cursor"}}


class ShardedHub:
    def __init__(self, shards: list[HubShard], latency_target_ms: float = 2000.0, *, timeout: float = 2.0,
                 buffer_batches: int = 20, read_timeout: float = 4.0) -> None:
        if not shards:
            raise ValueError("at least one shard")
        self._shards = shards
        self._target = latency_target_ms
        self._timeout = timeout
        self._read_timeout = read_timeout
        self._next = random.randrange(len(shards))
        self._pending: list[deque[list[dict[str, Any]]]] = [deque() for _ in shards]
        self._buffer_batches = max(0, buffer_batches)
        self._dropped = 0  # events dropped and not yet reported to a shard
        self.dropped_total = 0

    # -- ingestion -----------------------------------------------------------------------
    async def publish(self, events: list[dict[str, Any]]) -> None:
        index = self._next
        self._next = (index + 1) % len(self._shards)
        batch = list(events)
        if self._dropped:
            batch.append({"type": DROPPED_EVENT, "events": self._dropped})
        reported = self._dropped
        if not await self._send(index, batch):
            self._keep(index, events)
            return
        self._dropped -= reported
        pending = self._pending[index]
        while pending:  # the shard answers again: what waited for it goes now, oldest first
            if not await self._send(index, pending[0]):
                return
            pending.popleft()

    async def _send(self, index: int, batch: list[dict[str, Any]]) -> bool:
        try:
            await asyncio.wait_for(self._shards[index].publish(batch), self._timeout)
            return True
        except Exception:
            log.warning("hub shard %d did not take a batch of %d events", index, len(batch), exc_info=True)
            return False

    def _keep(self, index: int, events: list[dict[str, Any]]) -> None:
        pending = self._pending[index]
        pending.append(events)
        while len(pending) > self._buffer_batches:
            lost = pending.popleft()
            self._dropped += len(lost)
            self.dropped_total += len(lost)

    def buffered(self) -> int:
        """Batches waiting for their shard in this isolate."""
        return sum(len(p) for p in self._pending)

    # -- reads ---------------------------------------------------------------------------
    async def _gather(self, call: Any) -> tuple[list[Any], dict[str, int]]:
        async def one(shard: HubShard) -> Any:
            return await asyncio.wait_for(call(shard), self._read_timeout)

        results = await asyncio.gather(*(one(s) for s in self._shards), return_exceptions=True)
        answers = [r for r in results if not isinstance(r, BaseException)]
        for index, result in enumerate(results):
            if isinstance(result, BaseException):
                log.warning("hub shard %d did not answer a read: %r", index, result)
        if not answers:
            raise ShardsUnavailable("no metrics-hub shard answered")
        return results, {"answered": len(answers), "of": len(self._shards)}

    async def _merged(self, view: str, arg: str | None = None) -> tuple[dict[str, Any], dict[str, int]]:
        results, shards = await self._gather(lambda shard: shard.parts(view, arg))
        return merge(r for r in results if not isinstance(r, BaseException)), shards

    async def snapshot(self) -> dict[str, Any]:
        parts, shards = await self._merged("snapshot")
        return {**render_snapshot(parts, self._target), "shards": shards}

    async def health(self) -> dict[str, Any]:
        parts, shards = await self._merged("health")
        return {**render_health_summary(parts, self._target), "shards": shards}

    async def analytics(self, window: str | None) -> dict[str, Any]:
        parts, shards = await self._merged("analytics", window)
        return {**render_analytics(parts, self._target), "shards": shards}

    async def prometheus(self) -> str:
        results, shards = await self._gather(lambda shard: shard.parts("prometheus"))
        answers = [r for r in results if not isinstance(r, BaseException)]
        text = merge_prometheus([a["text"] for a in answers], merge(a.get("health") for a in answers) or {},
                                self._target)
        return (text + "# HELP flaregate_hub_shards_answered Metrics-hub shards that answered this scrape.\n"
                "# TYPE flaregate_hub_shards_answered gauge\n"
                f"flaregate_hub_shards_answered {shards['answered']}\n"
                "# HELP flaregate_hub_shards Metrics-hub shards configured (HUB_SHARDS).\n"
                "# TYPE flaregate_hub_shards gauge\n"
                f"flaregate_hub_shards {shards['of']}\n")

    async def logs(self, params: dict[str, str]) -> dict[str, Any]:
        if params.get("id"):
            results, _ = await self._gather(lambda shard: shard.logs(params))
            found = [r["record"] for r in results if isinstance(r, dict) and r.get("record")]
            return {"record": max(found, key=lambda r: r.get("ts") or 0) if found else None}
        cursor = params.get("cursor")
        position = _parse_cursor(cursor) if cursor else None
        if cursor and position is None:
            return _BAD_CURSOR

        def shard_params(index: int) -> dict[str, str]:
            own = {k: v for k, v in params.items() if k != "cursor"}
            own["with_seq"] = "1"
            if position is not None:
                ts, shard, seq = position
                # Before (ts, shard, seq) in the merged order (ts, shard, seq) descending.
                own["cursor"] = _shard_cursor(ts, seq if index == shard else 2**53 if index < shard else 0)
            return own

        async def page(index: int) -> dict[str, Any]:
            return await asyncio.wait_for(self._shards[index].logs(shard_params(index)), self._read_timeout)

        results = await asyncio.gather(*(page(i) for i in range(len(self._shards))), return_exceptions=True)
        rows: list[tuple[float, int, int, dict[str, Any]]] = []
        answered, more = 0, False
        for index, result in enumerate(results):
            if isinstance(result, BaseException) or not isinstance(result, dict):
                continue
            if "error" in result:
                return result
            answered += 1
            more = more or bool(result.get("has_more"))
            for record, seq in zip(result.get("data") or [], result.get("seqs") or [], strict=False):
                rows.append((float(record.get("ts") or 0), index, int(seq), record))
        if not answered:
            raise ShardsUnavailable("no metrics-hub shard answered")
        rows.sort(key=lambda row: row[:3], reverse=True)
        limit = _page_limit(params.get("limit"))
        page_rows = rows[:limit]
        more = more or len(rows) > limit
        next_cursor = _cursor(*page_rows[-1][:3]) if more and page_rows else None
        return {"object": "list", "data": [row[3] for row in page_rows], "next_cursor": next_cursor,
                "has_more": more, "shards": {"answered": answered, "of": len(self._shards)}}


def _page_limit(text: str | None) -> int:
    try:
        return min(max(1, int(text)), MAX_PAGE) if text else 50
    except ValueError:
        return 50
