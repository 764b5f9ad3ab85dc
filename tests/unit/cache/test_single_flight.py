"""Single-flight: one upstream call shared by identical concurrent requests."""

import asyncio

import pytest

from flaregate.cache.single_flight import SingleFlight
from flaregate.ports import UpstreamError


class GatedResponse:
    """An upstream response whose chunks are released one by one by the test."""

    def __init__(self, chunks, status=200):
        self.status = status
        self.headers = {"content-type": "text/event-stream"}
        self.chunks = list(chunks)
        self.gate = asyncio.Queue()
        self.closed = False
        self.pulled = 0

    def release(self, n=1):
        for _ in range(n):
            self.gate.put_nowait(True)

    async def aiter_bytes(self):
        for chunk in self.chunks:
            await self.gate.get()
            self.pulled += 1
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk

    async def read(self):
        return b"".join([c async for c in self.aiter_bytes()])

    async def aclose(self):
        self.closed = True


class Recorder:
    def __init__(self):
        self.fed = []
        self.finished = []

    def feed(self, chunk):
        self.fed.append(chunk)

    def finish(self, target, status, ok):
        self.finished.append((target, status, ok))


def opener(response, calls, delay=None):
    async def open_call():
        calls.append(1)
        if delay is not None:
            await delay.wait()
        return "target", response
    return open_call


async def drain(reader):
    return [chunk async for chunk in reader.aiter_bytes()]


async def test_concurrent_joiners_share_one_call_and_see_every_chunk():
    flights, calls, recorders = SingleFlight(), [], []
    response = GatedResponse([b"a", b"b", b"c"])
    opened = asyncio.Event()

    def recorder():
        recorders.append(Recorder())
        return recorders[-1]

    joins = [asyncio.ensure_future(flights.join("k", opener(response, calls, opened), recorder)) for _ in range(20)]
    await asyncio.sleep(0)
    opened.set()
    readers = [reader for _, reader in await asyncio.gather(*joins)]
    assert len(calls) == 1 and len(recorders) == 1
    assert [r.follower for r in readers].count(False) == 1
    tasks = [asyncio.ensure_future(drain(r)) for r in readers]
    response.release(3)
    results = await asyncio.gather(*tasks)
    assert all(result == [b"a", b"b", b"c"] for result in results)
    assert response.pulled == 3  # each chunk pulled once, whoever pulled it
    assert recorders[0].fed == [b"a", b"b", b"c"] and recorders[0].finished == [("target", 200, True)]
    assert response.closed and len(flights) == 0
    assert flights.stats() == {"in_flight": 0, "opened": 1, "collapsed": 19}


async def test_a_late_joiner_gets_the_chunks_it_missed_then_follows_live():
    flights = SingleFlight()
    response = GatedResponse([b"1", b"2", b"3"])
    _, first = await flights.join("k", opener(response, []), Recorder)
    stream = first.aiter_bytes()
    response.release()
    assert await anext(stream) == b"1"
    _, late = await flights.join("k", opener(response, []), Recorder)
    late_task = asyncio.ensure_future(drain(late))
    response.release(2)
    assert [c async for c in stream] == [b"2", b"3"]
    assert await late_task == [b"1", b"2", b"3"] and late.follower


async def test_only_the_opener_reads_the_upstream_until_it_leaves_then_a_follower_takes_over():
    # On the edge a request may not read another request's fetch body while that one is alive.
    flights = SingleFlight()
    response = GatedResponse([b"1", b"2"])
    _, owner = await flights.join("k", opener(response, []), Recorder)
    _, follower = await flights.join("k", opener(response, []), Recorder)
    waiting = asyncio.ensure_future(drain(follower))
    response.release(2)
    for _ in range(20):
        await asyncio.sleep(0)
    assert response.pulled == 0 and not waiting.done()
    await owner.aclose()
    assert await waiting == [b"1", b"2"]


async def test_the_opener_failure_reaches_everyone_and_the_next_request_tries_again():
    flights, calls = SingleFlight(), []
    gate = asyncio.Event()

    async def failing():
        calls.append(1)
        await gate.wait()
        raise UpstreamError("down")

    joins = [asyncio.ensure_future(flights.join("k", failing, Recorder)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*joins, return_exceptions=True)
    assert all(isinstance(r, UpstreamError) for r in results) and len(calls) == 1
    _, reader = await flights.join("k", opener(GatedResponse([]), calls), Recorder)
    assert len(calls) == 2 and not reader.follower


async def test_when_every_reader_leaves_early_the_upstream_is_closed_and_not_recorded_as_whole():
    flights = SingleFlight()
    response = GatedResponse([b"1", b"2"])
    recorder = Recorder()
    _, a = await flights.join("k", opener(response, []), lambda: recorder)
    _, b = await flights.join("k", opener(response, []), Recorder)
    response.release()
    assert await anext(a.aiter_bytes()) == b"1"
    await a.aclose()
    assert not response.closed  # b is still reading
    await b.aclose()
    assert response.closed and recorder.finished == [("target", 200, False)] and len(flights) == 0


async def test_a_broken_upstream_reaches_every_reader_after_the_chunks_it_sent():
    flights = SingleFlight()
    response = GatedResponse([b"1", UpstreamError("reset")])
    _, a = await flights.join("k", opener(response, []), Recorder)
    _, b = await flights.join("k", opener(response, []), Recorder)
    response.release(2)
    for reader in (a, b):
        got = []
        with pytest.raises(UpstreamError, match="reset"):
            async for chunk in reader.aiter_bytes():
                got.append(chunk)
        assert got == [b"1"]


async def test_a_recorder_that_fails_once_never_stores_a_partial_answer():
    class Flaky(Recorder):
        def feed(self, chunk):
            if chunk == b"2":
                raise RuntimeError("boom")
            super().feed(chunk)

    flights, recorder = SingleFlight(), Flaky()
    response = GatedResponse([b"1", b"2", b"3"])
    _, reader = await flights.join("k", opener(response, []), lambda: recorder)
    response.release(3)
    assert await drain(reader) == [b"1", b"2", b"3"]  # the client still gets every chunk
    assert recorder.fed == [b"1"] and recorder.finished == []


async def test_read_shares_the_whole_body_and_reports_bytes_delivered():
    flights = SingleFlight()
    response = GatedResponse([b'{"a":', b"1}"])
    closed = []
    _, a = await flights.join("k", opener(response, []), Recorder, on_close=closed.append)
    _, b = await flights.join("k", opener(response, []), Recorder, on_close=closed.append)
    response.release(2)
    assert await asyncio.gather(a.read(), b.read()) == [b'{"a":1}', b'{"a":1}']
    await b.aclose()
    assert closed == [b] and b.delivered == 7
