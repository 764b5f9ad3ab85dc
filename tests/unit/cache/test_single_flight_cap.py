"""Single-flight keeps a bounded part of its stream (SINGLE_FLIGHT_MAX_BYTES): past the cap
the flight takes no newcomers and keeps only what its readers have yet to read; a reader
that falls further behind is cut off with a clear error, the others stream on."""

import pytest

from flaregate.cache.single_flight import FlightOverrun, SingleFlight
from flaregate.ports import UpstreamError

KIB = 1024
CAP = 8 * KIB


class Stream:
    """An upstream stream of ``count`` chunks of ``size`` bytes, made as they are pulled."""

    def __init__(self, count, size=KIB):
        self.status = 200
        self.headers = {"content-type": "text/event-stream"}
        self.count, self.size = count, size
        self.pulled = 0
        self.closed = False

    async def aiter_bytes(self):
        for i in range(self.count):
            self.pulled += 1
            yield bytes([65 + i % 26]) * self.size

    async def read(self):
        return b"".join([c async for c in self.aiter_bytes()])

    async def aclose(self):
        self.closed = True


class Recorder:
    def __init__(self):
        self.size = 0
        self.finished = []

    def feed(self, chunk):
        self.size += len(chunk)

    def finish(self, target, status, ok):
        self.finished.append(ok)


def opener(response, calls):
    async def open_call():
        calls.append(response)
        return "target", response
    return open_call


async def test_a_flight_over_its_cap_keeps_a_bounded_part_and_takes_no_newcomers():
    flights, calls, recorder = SingleFlight(max_bytes=CAP), [], Recorder()
    upstream = Stream(400)  # 400 KiB: 50x the cap
    _, owner = await flights.join("k", opener(upstream, calls), lambda: recorder)
    flight = owner._flight
    kept_peak, received = 0, 0
    async for chunk in owner.aiter_bytes():
        received += len(chunk)
        kept_peak = max(kept_peak, flight.kept, sum(map(len, flight.chunks)))
        if received == 2 * CAP:  # past the cap: an identical request opens its own call
            _, newcomer = await flights.join("k", opener(Stream(1), calls), Recorder)
            assert not newcomer.follower and len(calls) == 2
            assert [c async for c in newcomer.aiter_bytes()] == [b"A" * KIB]
            await newcomer.aclose()
    await owner.aclose()
    assert received == 400 * KIB  # the owner's client got all of it
    assert kept_peak <= CAP + KIB  # never more than the cap and the chunk in hand
    assert recorder.size == 400 * KIB and recorder.finished == [True]  # the cache still sees it whole
    assert flights.overrun == 1 and len(flights) == 0


async def test_without_the_cap_every_chunk_would_be_kept():
    """The same stream under a cap larger than it: everything is kept for late joiners
    (the behaviour the cap bounds)."""
    flights = SingleFlight(max_bytes=1 << 30)
    _, owner = await flights.join("k", opener(Stream(400), []), Recorder)
    flight = owner._flight
    async for _ in owner.aiter_bytes():
        pass
    assert sum(map(len, flight.chunks)) == 400 * KIB
    await owner.aclose()


async def test_a_follower_too_far_behind_is_cut_off_and_the_owner_streams_on():
    flights, calls = SingleFlight(max_bytes=CAP), []
    upstream = Stream(100)
    _, owner = await flights.join("k", opener(upstream, calls), Recorder)
    _, follower = await flights.join("k", opener(Stream(1), calls), Recorder)
    assert follower.follower and len(calls) == 1
    mine, lagging = owner.aiter_bytes(), follower.aiter_bytes()
    owned = [await anext(mine)]  # the owner pulls; a follower waits for what it pulled
    assert await anext(lagging) == b"A" * KIB  # it read one chunk, then stopped reading
    owned += [chunk async for chunk in mine]
    assert len(owned) == 100 and upstream.pulled == 100
    assert sum(map(len, owner._flight.chunks)) <= CAP + KIB  # the follower's backlog was let go
    with pytest.raises(FlightOverrun) as info:
        await anext(lagging)
    assert isinstance(info.value, UpstreamError)  # the relays turn it into the stream's error event
    assert "SINGLE_FLIGHT_MAX_BYTES" in str(info.value) and str(info.value).startswith("single_flight_overrun")
    await follower.aclose()
    await owner.aclose()


async def test_a_follower_in_step_is_served_past_the_cap():
    flights = SingleFlight(max_bytes=CAP)
    _, owner = await flights.join("k", opener(Stream(60), []), Recorder)
    _, follower = await flights.join("k", opener(Stream(1), []), Recorder)
    mine, theirs = owner.aiter_bytes(), follower.aiter_bytes()
    got_owner, got_follower = [], []
    for _ in range(60):
        got_owner.append(await anext(mine))
        got_follower.append(await anext(theirs))
        assert sum(map(len, owner._flight.chunks)) <= CAP + KIB
    assert got_owner == got_follower and len(got_owner) == 60
    for reader in (mine, theirs):  # the end, as the owner learns it, reaches the follower
        with pytest.raises(StopAsyncIteration):
            await anext(reader)
    await follower.aclose()
    await owner.aclose()


async def test_a_whole_body_flight_is_shared_whatever_its_size():
    """A non-streamed answer is one bytes object for every reader: the cap is the stream's."""
    flights = SingleFlight(max_bytes=CAP)
    _, owner = await flights.join("k", opener(Stream(20), []), Recorder)
    _, follower = await flights.join("k", opener(Stream(1), []), Recorder)
    body = await owner.read()
    assert len(body) == 20 * KIB and await follower.read() == body
    await follower.aclose()
    await owner.aclose()
