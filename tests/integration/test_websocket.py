"""The live metrics hub at /ws with a real websockets client."""

import asyncio
import json
import time

import httpx
import pytest
import websockets

from .conftest import GATEWAY_KEY, run_gateway, upstream_env

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}


@pytest.fixture
def fresh(upstream, tmp_path):
    with run_gateway(tmp_path / "ws", upstream_env(upstream.base_url)) as server:
        yield server


async def next_message(ws, kind, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if message["type"] == kind:
            return message


async def test_snapshot_then_metrics_matching_the_requests(fresh):
    async with websockets.connect(fresh.ws_url, additional_headers=AUTH) as ws:
        snapshot = await next_message(ws, "snapshot")
        assert snapshot["metrics"]["totals"]["requests"] == 0
        async with httpx.AsyncClient(headers=AUTH) as http:
            for i in range(3):
                body = {"model": "mock-1", "messages": [{"role": "user", "content": f"m{i}"}]}
                assert (await http.post(fresh.base_url + "/v1/chat/completions", json=body)).status_code == 200
        sent_at = time.monotonic()
        metrics = await next_message(ws, "metrics", timeout=2.0)
        while metrics["metrics"]["totals"]["requests"] < 3:
            metrics = await next_message(ws, "metrics", timeout=2.0)
        assert time.monotonic() - sent_at < 1.5  # at most ~1 s after traffic changed them
        assert metrics["metrics"]["totals"]["requests"] == 3
        assert metrics["metrics"]["totals"]["cache_misses"] == 3


async def test_ws_requires_a_gateway_key(fresh):
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        async with websockets.connect(fresh.ws_url):
            pass
    assert info.value.response.status_code == 401
    async with websockets.connect(fresh.ws_url + f"?token={GATEWAY_KEY}") as ws:  # what a browser can send
        assert (await next_message(ws, "snapshot"))["type"] == "snapshot"


async def test_garbage_and_abrupt_disconnects_do_not_disturb_others(fresh):
    async with websockets.connect(fresh.ws_url, additional_headers=AUTH) as steady:
        await next_message(steady, "snapshot")
        noisy = await websockets.connect(fresh.ws_url, additional_headers=AUTH)
        await next_message(noisy, "snapshot")
        await noisy.send("this is not json")
        assert (await next_message(noisy, "error"))["message"]
        await noisy.send(b"\x00\xff binary")
        assert (await next_message(noisy, "error"))["type"] == "error"
        await noisy.send(json.dumps({"type": "ping"}))
        assert (await next_message(noisy, "pong"))["type"] == "pong"
        noisy.transport.abort()  # vanish without a close frame
        async with httpx.AsyncClient(headers=AUTH) as http:
            body = {"model": "mock-1", "messages": [{"role": "user", "content": "still there?"}]}
            assert (await http.post(fresh.base_url + "/v1/chat/completions", json=body)).status_code == 200
            metrics = await next_message(steady, "metrics")
            assert metrics["metrics"]["totals"]["requests"] == 1
            assert (await http.get(fresh.base_url + "/health")).status_code == 200
