"""The Worker's response-stream pump under CPython: a client that leaves stops the stream at
once (the writer's ``closed`` promise rejects), even while the upstream is silent; silent SSE
streams get a keep-alive comment between events, so that the runtime finds a gone client."""

from __future__ import annotations

import asyncio
import json
import types
from typing import Any

import pytest

import entry
from flaregate.hosts.edge import rpc as edge_rpc
from flaregate.hosts.edge import worker as edge_worker

from .conftest import API_KEY, FakeBodyStream, FakeCtx, FakeFetchResponse, FakeRequest, FakeWriter

BASE = "https://flaregate.example.workers.dev"
EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'


class Upstream:
    """A body that sends ``first`` and then is silent until the body is cancelled; it
    records how it was left."""

    def __init__(self, *first: bytes) -> None:
        self.first = list(first)
        self.cancelled = asyncio.Event()
        self.outcome: str | None = None

    async def chunks(self) -> Any:
        try:
            for chunk in self.first:
                yield chunk
            await self.cancelled.wait()
        except (GeneratorExit, asyncio.CancelledError) as exc:
            self.outcome = type(exc).__name__
            raise
        finally:
            self.cancelled.set()


async def wait_until(predicate: Any, timeout: float = 1.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not within the timeout")


async def test_a_client_that_leaves_a_silent_stream_stops_it_at_once():
    upstream, writer = Upstream(EVENT), FakeWriter()
    pump = asyncio.ensure_future(edge_worker._pump(upstream.chunks(), writer))
    await wait_until(lambda: writer.chunks == [EVENT])
    writer.leave()  # nothing more is written: only the closed promise can tell
    await asyncio.wait_for(pump, 1.0)
    assert upstream.outcome == "CancelledError"  # cancelled where it waited for the upstream
    assert writer.is_closed


async def test_a_stream_that_ends_closes_its_writer_and_leaves_nothing_running():
    async def chunks() -> Any:
        yield EVENT
        yield b"data: [DONE]\n\n"

    writer = FakeWriter()
    before = asyncio.all_tasks()
    await asyncio.wait_for(edge_worker._pump(chunks(), writer, heartbeat=0.01), 1.0)
    assert writer.chunks == [EVENT, b"data: [DONE]\n\n"] and writer.is_closed
    await asyncio.sleep(0.03)  # no heartbeat after the end
    assert writer.chunks == [EVENT, b"data: [DONE]\n\n"]
    assert asyncio.all_tasks() <= before | {asyncio.current_task()}


async def test_a_silent_sse_stream_gets_a_keep_alive_comment_each_heartbeat():
    gate = asyncio.Event()

    async def chunks() -> Any:
        yield EVENT
        await gate.wait()
        yield b"data: [DONE]\n\n"

    writer = FakeWriter()
    pump = asyncio.ensure_future(edge_worker._pump(chunks(), writer, heartbeat=0.02))
    await wait_until(lambda: writer.chunks.count(edge_worker.HEARTBEAT) >= 3)
    gate.set()
    await asyncio.wait_for(pump, 1.0)
    assert writer.chunks[0] == EVENT and writer.chunks[-1] == b"data: [DONE]\n\n"
    assert set(writer.chunks[1:-1]) == {b": keep-alive\n\n"}  # an SSE comment: clients skip it


async def test_no_keep_alive_goes_into_the_middle_of_an_event():
    gate = asyncio.Event()

    async def chunks() -> Any:
        yield b'data: {"choices": [{"ind'  # an event split across two chunks
        await gate.wait()
        yield b'ex": 0}]}\n\n'

    writer = FakeWriter()
    pump = asyncio.ensure_future(edge_worker._pump(chunks(), writer, heartbeat=0.01))
    await asyncio.sleep(0.08)
    gate.set()
    await asyncio.wait_for(pump, 1.0)
    assert edge_worker.HEARTBEAT not in writer.chunks


async def test_a_keep_alive_that_finds_the_client_gone_stops_the_stream():
    upstream, writer = Upstream(EVENT), FakeWriter()
    pump = asyncio.ensure_future(edge_worker._pump(upstream.chunks(), writer, heartbeat=0.01))
    await wait_until(lambda: edge_worker.HEARTBEAT in writer.chunks)
    writer.fail = True  # the next write fails; then the runtime errors the stream
    await asyncio.sleep(0.03)
    writer.leave()
    await asyncio.wait_for(pump, 1.0)
    assert upstream.outcome == "CancelledError" and writer.is_closed


# -- through the Worker: the upstream fetch is cancelled, the request recorded as aborted ------------
class SilentBody(FakeBodyStream):
    """A fetch body that sends its chunks and then waits until it is cancelled."""

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__(chunks)
        self.gone = asyncio.Event()

    def getReader(self) -> Any:  # noqa: N802 (the JS name)
        body, sent = self, iter(self._chunks)

        async def read() -> Any:
            for chunk in sent:
                return types.SimpleNamespace(done=False, value=chunk)
            await body.gone.wait()
            return types.SimpleNamespace(done=True, value=None)

        async def cancel() -> None:
            body.cancelled = True
            body.gone.set()

        return types.SimpleNamespace(read=read, cancel=cancel)


async def test_a_client_leaving_a_silent_upstream_cancels_the_fetch_and_is_recorded_aborted(make_env, fake_http):
    env = make_env(OPENAI_API_KEY="sk-upstream", OPENAI_BASE_URL="https://llm.example/v1",
                   UPSTREAM_STREAM_IDLE_TIMEOUT_SECONDS="60")
    body = SilentBody([EVENT])
    fake_http.responses.append(FakeFetchResponse(200, {"Content-Type": "text/event-stream"}, body))
    ctx = FakeCtx()
    request = FakeRequest("POST", f"{BASE}/v1/chat/completions",
                          {"content-type": "application/json", "authorization": f"Bearer {API_KEY}",
                           "x-request-id": "req_left_silent", "cache-control": "no-store"},
                          json.dumps({"model": "gpt-x", "stream": True,
                                      "messages": [{"role": "user", "content": "think hard"}]}).encode())
    response = await entry.Default(ctx, env).fetch(request)
    assert response.status == 200
    writer = response.body.writer
    drained = asyncio.ensure_future(ctx.drain())
    await wait_until(lambda: writer.chunks == [EVENT])
    writer.leave()
    await asyncio.wait_for(drained, 1.0)
    assert body.cancelled  # the upstream call is closed, not left to the upstream's end
    await ctx.drain()
    page = await edge_rpc.call(env.METRICS_HUB.getByName("global"), "logs", {})
    [logged] = [r for r in page["data"] if r["request_id"] == "req_left_silent"]
    assert logged.get("stream_outcome") == "aborted"


@pytest.fixture(autouse=True)
def _quiet_pump_logs(caplog):
    caplog.set_level("ERROR", logger="flaregate.edge")
