"""Tool pins in the security store, the same answers from SQLite and from Redis (several
replicas): first seen is trusted, a change is reported once and held until approved by
the hash the admin saw."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import pytest

from flaregate.security.store import SecurityStore
from tests.support.fakes import FakeClock, MemorySql


async def _scenario(call: Any) -> None:
    assert await call("mcp_pins.observe", {"tools": {"gh.search": "h1", "gh.get": "g1"}}) == {}
    assert await call("mcp_pins.observe", {"tools": {"gh.search": "h1"}}) == {}
    changed = await call("mcp_pins.observe", {"tools": {"gh.search": "h2", "gh.get": "g1"}})
    assert changed == {"gh.search": {"approved": "h1", "seen": "h2", "changed": True}}
    again = await call("mcp_pins.observe", {"tools": {"gh.search": "h2"}})
    assert again == {"gh.search": {"approved": "h1", "seen": "h2", "changed": False}}  # reported once
    assert await call("mcp_pins.approve", {"tool": "gh.search", "seen": "h1"}) is False  # not what is seen
    assert await call("mcp_pins.approve", {"tool": "nope.x", "seen": "h2"}) is False
    assert await call("mcp_pins.approve", {"tool": "gh.search", "seen": "h2"}) is True
    assert await call("mcp_pins.observe", {"tools": {"gh.search": "h2"}}) == {}
    pins = {p["tool"]: p for p in await call("mcp_pins.list", {})}
    assert pins["gh.search"]["approved"] == pins["gh.search"]["seen"] == "h2" and pins["gh.get"]["seen"] == "g1"


def test_pins_in_sqlite():
    store = SecurityStore(MemorySql(), FakeClock())

    async def call(op: str, args: dict[str, Any]) -> Any:
        return store.call(op, args)

    asyncio.run(_scenario(call))


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed (.ci/run installs it)")
def test_pins_in_redis(tmp_path):
    from flaregate.hosts.local.redis_backend import RedisSecurityClient, connect
    from tests.support.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        async def run() -> None:
            redis = connect(server.url)
            try:
                await _scenario(RedisSecurityClient(redis, FakeClock()).call)
            finally:
                await redis.aclose()

        asyncio.run(run())
    finally:
        server.stop()
