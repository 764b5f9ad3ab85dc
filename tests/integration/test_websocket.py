"""The live metrics hub at /ws with a real websockets client."""

import asyncio
import json
import time

import httpx
import pytest
import websockets

from .conftest import ADMIN_KEY, GATEWAY_KEY, MEMORY_FIELD, run_gateway, upstream_env

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
API = {"authorization": f"Bearer {GATEWAY_KEY}"}


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


async def chat(base_url, model="mock-1", content="hi"):
    async with httpx.AsyncClient(headers=API, timeout=20) as http:
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        return await http.post(base_url + "/v1/chat/completions", json=body)


async def test_hello_snapshot_then_metrics_matching_the_requests(fresh):
    async with websockets.connect(fresh.ws_url, additional_headers=ADMIN) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello" and hello["protocol"] == 1 and "failover" in hello["events"]
        snapshot = json.loads(await ws.recv())
        assert snapshot["type"] == "snapshot" and snapshot["metrics"]["totals"]["requests"] == 0
        for i in range(3):
            assert (await chat(fresh.base_url, content=f"m{i}")).status_code == 200
        sent_at = time.monotonic()
        metrics = await next_message(ws, "metrics", timeout=2.0)
        while metrics["metrics"]["totals"]["requests"] < 3:
            metrics = await next_message(ws, "metrics", timeout=2.0)
        print(f"metrics message {time.monotonic() - sent_at:.3f} s after the last response")
        assert metrics["metrics"]["totals"]["requests"] == 3
        assert metrics["metrics"]["totals"]["cache_misses"] == 3
        assert metrics["metrics"]["live"]["requests"] == 3
        assert metrics["metrics"]["health"]["score"] == 100
        assert metrics["metrics"]["process"][MEMORY_FIELD] > 0  # process (local) or hub isolate (edge) memory


async def test_ws_requires_the_admin_key_which_a_browser_can_send(fresh):
    for headers in ({}, API):  # a gateway key is for the API, not for the hub
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            async with websockets.connect(fresh.ws_url, additional_headers=headers):
                pass
        assert info.value.response.status_code == 401
    async with websockets.connect(fresh.ws_url + f"?token={ADMIN_KEY}") as ws:  # query token
        assert (await next_message(ws, "snapshot"))["type"] == "snapshot"
    subprotocols = ["flaregate.v1", f"bearer.{ADMIN_KEY}"]  # what the dashboard sends
    async with websockets.connect(fresh.ws_url, subprotocols=subprotocols) as ws:
        assert ws.subprotocol == "flaregate.v1"  # the key is never echoed
        assert (await next_message(ws, "snapshot"))["type"] == "snapshot"


async def test_a_failover_is_pushed_as_an_event(fresh):
    async with websockets.connect(fresh.ws_url, additional_headers=ADMIN) as ws:
        await next_message(ws, "snapshot")
        assert (await chat(fresh.base_url, model="gpt-failover")).status_code == 200
        event = await next_message(ws, "event", timeout=5.0)
        assert event["event"] == "failover"
        assert event["detail"] == {"from": ["dead"], "to": "upstream", "model": "gpt-failover"}


async def test_garbage_oversized_and_abrupt_disconnects_do_not_disturb_others(fresh):
    async with websockets.connect(fresh.ws_url, additional_headers=ADMIN) as steady:
        await next_message(steady, "snapshot")
        noisy = await websockets.connect(fresh.ws_url, additional_headers=ADMIN)
        await next_message(noisy, "snapshot")
        await noisy.send("this is not json")
        assert (await next_message(noisy, "error"))["message"]
        await noisy.send(b"\x00\xff binary")
        assert (await next_message(noisy, "error"))["type"] == "error"
        await noisy.send(json.dumps({"type": "ping", "pad": "x" * 5000}))  # over 4 KiB: an error
        assert "4 KiB" in (await next_message(noisy, "error"))["message"]
        await noisy.send(json.dumps({"type": "ping"}))
        assert (await next_message(noisy, "pong"))["type"] == "pong"
        noisy.transport.abort()  # vanish without a close frame

        huge = await websockets.connect(fresh.ws_url, additional_headers=ADMIN, max_size=None)
        await next_message(huge, "snapshot")
        await huge.send("x" * 100_000)  # over 64 KiB: closed with a reason
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(huge.recv(), 5)
        assert closed.value.rcvd.code == 1009 and "too big" in closed.value.rcvd.reason

        assert (await chat(fresh.base_url, content="still there?")).status_code == 200
        metrics = await next_message(steady, "metrics")
        assert metrics["metrics"]["totals"]["requests"] == 1
        async with httpx.AsyncClient() as http:
            assert (await http.get(fresh.base_url + "/health")).status_code == 200
