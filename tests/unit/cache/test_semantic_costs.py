"""The semantic cache costs nothing where no route turns it on: a gateway built without one,
answering a chat miss and then its exact hit, loads none of its modules but its settings
(which the configuration needs to refuse a bad one); a route that turns it on loads them.
Each check runs in a fresh interpreter, so nothing imported by other tests hides a load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

_RUN = """
import asyncio, json, sys
from tests.unit.test_gateway import build, chat

from flaregate.config import ConfigError

def loaded():
    return sorted(m for m in sys.modules if m.startswith("flaregate.cache.semantic"))

routes = json.loads(sys.argv[1])
try:
    gateway, _, tasks = build({"FLAREGATE_ROUTES": json.dumps(routes), "CACHE_TTL_SECONDS": "60"})
except ConfigError as exc:
    print(json.dumps({"error": str(exc), "loaded": loaded()}))
    sys.exit(0)

async def main():
    body = {"model": "mock-1", "messages": [{"role": "user", "content": "hello there"}]}
    for _ in range(2):  # a miss, then its exact hit
        response = await gateway.handle(chat(body))
        assert response.status == 200, response.body
        await tasks.drain()
    return response.headers.get("cache-status", "")

status = asyncio.run(main())
print(json.dumps({"status": status, "loaded": loaded(), "built": gateway.caching.semantic is not None}))
"""


def _run(routes: dict[str, object]) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _RUN, json.dumps(routes)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_semantic_off_loads_nothing_but_its_settings_and_the_chat_path_is_untouched():
    result = _run({"mock-1": ["mock"], "ab": ["a", "b"], "a": ["a"]})
    assert "hit" in str(result["status"])  # the exact cache works as before
    assert result["built"] is False
    assert result["loaded"] == ["flaregate.cache.semantic", "flaregate.cache.semantic.settings"]


def test_a_route_that_turns_it_on_loads_it():
    """The same check sees the modules load where a route asks for it (this test gateway has
    no index port, so the start stops there, once the builder is loaded)."""
    routes = {"mock-1": {"targets": ["mock"], "semantic_cache": {"embeddings": "bow"}}, "bow": ["mock/bow-embed"],
              "ab": ["a", "b"], "a": ["a"]}
    result = _run(routes)
    assert "this host has no semantic index" in str(result["error"])
    assert {"flaregate.cache.semantic.setup", "flaregate.cache.semantic.layer",
            "flaregate.cache.semantic.guard"} <= set(result["loaded"])  # type: ignore[arg-type]
