"""The semantic index in a real redis-server, as two replicas see it: each mirrors a
partition's codes and reads only the log's new entries; an add or delete by one is seen by
the other at its next search; past the log's cap the log is dropped, its generation changed,
and a replica reads the whole partition again (the same answers)."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from flaregate.cache.semantic.guard import features
from flaregate.cache.semantic.vectors import normalise, quantise, sign_code
from flaregate.providers.mock import bag_of_words

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (.ci/run installs it)")


class Clock:
    def now(self) -> float:
        return 1000.0

    def monotonic(self) -> float:
        return 1000.0


def _args(text: str) -> dict[str, str]:
    unit = normalise(bag_of_words(text))
    assert unit is not None
    return {"code": format(sign_code(unit), "x"), "vector": quantise(unit).hex(),
            "features": json.dumps(features(text).to_json())}


def test_replicas_mirror_the_partition_through_its_log(tmp_path):
    from flaregate.hosts.local import semantic_redis
    from flaregate.hosts.local.redis_backend import connect
    from tests.support.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()

    async def scenario() -> None:
        redis = connect(server.url)
        one, two = (semantic_redis.RedisSemanticIndex(redis, Clock()) for _ in range(2))

        async def add(index, entry_id: str, text: str, cap: int = 1000) -> None:
            await index.call("add", {"partition": "p", "id": entry_id, "expires_at": 5000.0, "max_entries": cap,
                                     **_args(text)})

        async def found(index, text: str) -> list[str]:
            query = _args(text)
            answer = await index.call("search", {"partition": "p", "code": query["code"],
                                                 "vector": query["vector"], "limit": 8, "threshold": 0.7})
            return [m["id"] for m in answer["matches"]]

        try:
            await add(one, "a", "how do vaccines train the immune system")
            assert await found(two, "how do vaccines train the immune system please") == ["a"]
            await add(two, "b", "what is the tallest mountain on earth")
            assert await found(one, "what is the tallest mountain on earth today") == ["b"]
            await one.call("delete", {"partition": "p", "id": "a"})
            assert await found(two, "how do vaccines train the immune system please") == []
            # Past the log's cap: dropped, generation changed; a mirror reads the hash again.
            generation = await redis.get("fg:sem:p:gen")
            assert generation
            saved_cap = semantic_redis._LOG_PER_CAP
            semantic_redis._LOG_PER_CAP = 0
            try:
                await add(one, "d", "which planet has the most moons", cap=10_000)
            finally:
                semantic_redis._LOG_PER_CAP = saved_cap
            assert await redis.llen("fg:sem:p:log") == 0 and await redis.get("fg:sem:p:gen") not in (None, generation)
            assert await found(two, "which planet has the most moons now") == ["d"]
            assert await found(two, "what is the tallest mountain on earth today") == ["b"]
            await add(one, "e", "how far away is the moon from earth")
            assert await found(two, "how far away is the moon from earth exactly") == ["e"]
            # The cap drops the oldest, and the replicas see them go.
            for i in range(3):
                await add(one, f"c{i}", f"recipe number {i} for a lemon cake", cap=2)
            assert await found(two, "what is the tallest mountain on earth today") == []
            assert set(await found(two, "recipe number 2 for a lemon cake")) <= {"c1", "c2"}
            # The partition's keys expire and it comes back: a new generation, read from scratch.
            await redis.delete(*(f"fg:sem:p:{k}" for k in ("codes", "rows", "order", "log", "gen")))
            await add(one, "f", "who painted the mona lisa")
            assert await found(two, "who painted the mona lisa exactly") == ["f"]
        finally:
            await redis.aclose()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
