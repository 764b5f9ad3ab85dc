"""Batches: concurrent calls on one name share a round trip, and a call that arrives while
one is on its way waits for the next (its answer is never from an earlier read)."""

import asyncio

from flaregate.hosts.local.redis_backend import Batches


async def test_calls_waiting_together_share_one_round_trip_and_later_ones_the_next():
    sent: list[list[int]] = []
    in_flight = asyncio.Event()
    release = asyncio.Event()

    async def decide(name: str, calls: list[int]) -> list[object]:
        sent.append(list(calls))
        in_flight.set()
        await release.wait()
        return [ValueError("bad") if c < 0 else c * 10 for c in calls]

    batches = Batches(decide)
    first = [asyncio.ensure_future(batches.run("p", c)) for c in (1, 2, -1)]
    await in_flight.wait()
    later = [asyncio.ensure_future(batches.run("p", c)) for c in (3, 4)]
    other = asyncio.ensure_future(batches.run("q", 5))
    await asyncio.sleep(0)
    release.set()
    done = await asyncio.gather(*first, *later, other, return_exceptions=True)
    assert sent == [[1, 2, -1], [5], [3, 4]]
    assert done[:2] == [10, 20] and isinstance(done[2], ValueError)
    assert done[3:] == [30, 40, 50]


async def test_a_failed_round_trip_fails_its_batch_and_the_next_batch_still_runs():
    calls = 0

    async def decide(name: str, batch: list[int]) -> list[object]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("redis away")
        return batch

    batches = Batches(decide)
    failed = await asyncio.gather(batches.run("p", 1), return_exceptions=True)
    assert isinstance(failed[0], ConnectionError)
    assert await batches.run("p", 2) == 2
