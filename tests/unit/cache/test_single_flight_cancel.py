"""Single-flight when a reader is cancelled where it waits (its host's client left): the
upstream read goes on for the others (in process they take over; on the edge the opener's
request reads on for them); when no one is left the upstream call is closed at once."""

from __future__ import annotations

import asyncio
from typing import Any

from flaregate.cache.single_flight import SingleFlight


class Upstream:
    """An upstream response whose chunks are released one by one by the test."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.status = 200
        self.headers = {"content-type": "text/event-stream"}
        self.chunks = chunks
        self.gate: asyncio.Queue[bool] = asyncio.Queue()
        self.closed = False

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.gate.put_nowait(True)

    async def aiter_bytes(self) -> Any:
        for chunk in self.chunks:
            await self.gate.get()
            yield chunk

    async def read(self) -> bytes:
        return b"".join([c async for c in self.aiter_bytes()])

    async def aclose(self) -> None:
        self.closed = True


class Recorder:
    def __init__(self) -> None:
        self.finished: list[bool] = []

    def feed(self, chunk: bytes) -> None:
        pass

    def finish(self, target: Any, status: int, ok: bool) -> None:
        self.finished.append(ok)


async def join(flights: SingleFlight, upstream: Upstream) -> Any:
    async def open_call() -> tuple[str, Upstream]:
        return "target", upstream
    _, reader = await flights.join("k", open_call, Recorder)
    return reader


async def read_in_task(reader: Any) -> tuple[asyncio.Task[None], list[bytes]]:
    """Read ``reader`` as a relay would: in a task, closing the reader when it ends."""
    got: list[bytes] = []

    async def relay() -> None:
        try:
            async for chunk in reader.aiter_bytes():
                got.append(chunk)
        finally:
            await reader.aclose()

    return asyncio.ensure_future(relay()), got


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_puller_cancelled_mid_read_leaves_the_read_to_a_follower_who_takes_over():
    flights, upstream = SingleFlight(), Upstream([b"1", b"2", b"3"])
    owner, follower = await join(flights, upstream), await join(flights, upstream)
    owning, _ = await read_in_task(owner)
    following, got = await read_in_task(follower)
    await settle()  # the owner pulls: it waits for chunk 1 in the middle of the upstream read
    owning.cancel()  # its client left
    await asyncio.wait((owning,))
    assert not upstream.closed  # the follower still reads
    upstream.release(3)
    await asyncio.wait_for(following, 1.0)
    assert got == [b"1", b"2", b"3"] and upstream.closed


async def test_the_last_reader_cancelled_mid_read_closes_the_upstream_at_once():
    flights, upstream = SingleFlight(), Upstream([b"1", b"2"])
    owning, _ = await read_in_task(await join(flights, upstream))
    await settle()
    owning.cancel()
    await asyncio.wait((owning,))
    assert upstream.closed  # not left open until the upstream's next chunk
    assert len(flights) == 0


async def test_on_the_edge_the_opener_cancelled_mid_read_reads_on_for_a_follower():
    """Only the opener's request may read the body on the edge: its close reads on for the
    follower (the read its relay left running, then the next ones), to the body's end."""
    flights, upstream = SingleFlight(poll=True), Upstream([b"1", b"2", b"3"])
    owner, follower = await join(flights, upstream), await join(flights, upstream)
    owning, _ = await read_in_task(owner)
    following, got = await read_in_task(follower)
    await settle()
    owning.cancel()  # its client left, mid-read
    await settle()
    assert not owning.done() and not upstream.closed  # reading on for the follower
    upstream.release(3)
    await asyncio.wait_for(following, 1.0)
    assert got == [b"1", b"2", b"3"]
    await asyncio.wait_for(asyncio.wait((owning,)), 1.0)
    assert owning.cancelled() and upstream.closed


async def test_on_the_edge_the_opener_stops_reading_on_when_the_follower_leaves_too():
    flights, upstream = SingleFlight(poll=True), Upstream([b"1", b"2"])
    owner, follower = await join(flights, upstream), await join(flights, upstream)
    owning, _ = await read_in_task(owner)
    following, _ = await read_in_task(follower)
    await settle()
    owning.cancel()
    await settle()
    following.cancel()  # the upstream is silent: nobody waits for its next chunk
    await asyncio.wait((following,))
    await asyncio.wait_for(asyncio.wait((owning,)), 1.0)
    assert upstream.closed and len(flights) == 0


async def test_on_the_edge_an_opener_alone_cancelled_mid_read_closes_the_upstream_at_once():
    flights, upstream = SingleFlight(poll=True), Upstream([b"1", b"2"])
    owning, _ = await read_in_task(await join(flights, upstream))
    await settle()
    owning.cancel()
    await asyncio.wait_for(asyncio.wait((owning,)), 1.0)
    assert upstream.closed


async def test_a_follower_cancelled_mid_read_leaves_the_read_to_the_others_too():
    flights, upstream = SingleFlight(), Upstream([b"1", b"2"])
    owner, follower = await join(flights, upstream), await join(flights, upstream)
    await owner.aclose()  # the opener left before reading: the follower pulls
    following, _ = await read_in_task(follower)
    late = await join(flights, upstream)
    lasting, got = await read_in_task(late)
    await settle()
    following.cancel()
    await asyncio.wait((following,))
    assert not upstream.closed
    upstream.release(2)
    await asyncio.wait_for(lasting, 1.0)
    assert got == [b"1", b"2"] and upstream.closed
