"""Subscribers that misbehave: one that stops reading is dropped while another keeps
receiving; a thousand that come and go at random leave nothing behind."""

import asyncio
import base64
import json
import os
import random
import socket
import struct
import time

import httpx
import pytest
import websockets

from .conftest import ADMIN_KEY, GATEWAY_KEY, TARGET, run_gateway, upstream_env

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def masked_text_frame(text: str) -> bytes:
    """A client-to-server WebSocket text frame (clients must mask)."""
    payload, mask = text.encode(), os.urandom(4)
    size = len(payload)
    header = bytes([0x81]) + (bytes([0x80 | size]) if size < 126 else bytes([0xFE]) + struct.pack("!H", size))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def raw_handshake(base_url: str, read_response: bool = True) -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: fills fast
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n".encode()
    )
    if read_response:
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(1)
        assert response.startswith(b"HTTP/1.1 101")
    return sock


async def subscribers_gauge(base_url: str) -> int:
    async with httpx.AsyncClient() as http:
        text = (await http.get(base_url + "/metrics", headers=ADMIN)).text
    return int(next(line.split()[-1] for line in text.splitlines() if line.startswith("flaregate_hub_subscribers ")))


async def settled(probe, done, attempts: int = 100):
    """Poll ``probe`` until ``done(value)`` (bounded: about 20 s); return the last value."""
    for _ in range(attempts):
        value = await probe()
        if done(value):
            return value
        await asyncio.sleep(0.2)
    return value


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture
def fast_ticks(upstream, tmp_path):
    env = upstream_env(upstream.base_url, WS_OUTBOX_LIMIT="8", METRICS_TICK_SECONDS="0.05")
    with run_gateway(tmp_path / "slow", env) as server:
        yield server


@pytest.mark.skipif(
    TARGET == "edge",
    reason="edge-only mark: workerd gives a Durable Object no send-buffer figure for a hibernatable "
           "WebSocket (send() never fails, no bufferedAmount), so the hub cannot tell a stalled "
           "subscriber from a quiet one; docs/hub-protocol.md says what the edge does instead")
async def test_a_subscriber_that_stops_reading_is_dropped_while_another_keeps_receiving(fast_ticks):
    server = fast_ticks
    stalled = raw_handshake(server.base_url)  # handshake done, then it never reads again
    stalled.setblocking(False)
    async with websockets.connect(server.ws_url, additional_headers=ADMIN) as steady, \
            httpx.AsyncClient(headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as http:
        assert json.loads(await steady.recv())["type"] == "hello"
        seen: list[dict] = [json.loads(await steady.recv())["metrics"]]  # the snapshot
        body = {"model": "mock-1", "messages": [{"role": "user", "content": "tick"}]}
        requests_sent = 0
        for _ in range(200):  # bounded: it is dropped long before this ends
            for _ in range(20):  # each asks for a snapshot it will never read
                try:
                    stalled.send(masked_text_frame('{"type": "snapshot"}'))
                except BlockingIOError:
                    break
            assert (await http.post(server.base_url + "/v1/chat/completions", json=body)).status_code == 200
            requests_sent += 1
            while True:
                try:
                    message = json.loads(await asyncio.wait_for(steady.recv(), 0.02))
                except TimeoutError:
                    break
                if message["type"] == "metrics":
                    seen.append(message["metrics"])
            if seen[-1]["subscribers"] == 1:
                break
        assert seen[0]["subscribers"] == 2 and seen[-1]["subscribers"] == 1  # the stalled one is gone
        dropped_at = seen[-1]["totals"]["requests"]
        for _ in range(3):  # ... and the steady one keeps getting fresh numbers
            assert (await http.post(server.base_url + "/v1/chat/completions", json=body)).status_code == 200
        requests_sent += 3
        deadline = time.monotonic() + 10
        latest = seen[-1]
        while latest["totals"]["requests"] < requests_sent and time.monotonic() < deadline:
            message = json.loads(await asyncio.wait_for(steady.recv(), 5))
            if message["type"] == "metrics":
                latest = message["metrics"]
        assert latest["totals"]["requests"] == requests_sent > dropped_at
    # The server really let go of the stalled connection: it ends (FIN or RST), not lingers.
    # Still not reading for a while: the server's close frame cannot go out, so it aborts.
    await asyncio.sleep(2.5)
    stalled.setblocking(True)
    stalled.settimeout(15)
    received = 0
    with pytest.raises((ConnectionResetError, EOFError)):
        while True:
            chunk = stalled.recv(65536)
            if not chunk:
                raise EOFError
            received += len(chunk)
    stalled.close()


async def test_a_thousand_subscribers_coming_and_going_at_random_leave_no_leak(upstream, tmp_path):
    rng = random.Random(6)
    with run_gateway(tmp_path / "churn", upstream_env(upstream.base_url)) as server:
        baseline = open_fds(server.process.pid)

        async def one(behaviour: str) -> None:
            if behaviour == "raw-vanish":  # TCP handshake and upgrade request, then gone
                sock = await asyncio.to_thread(raw_handshake, server.base_url, rng.random() < 0.5)
                sock.close()
                return
            ws = await websockets.connect(server.ws_url, additional_headers=ADMIN, open_timeout=20)
            if behaviour == "read-close":
                await ws.recv()
                await ws.close()
            elif behaviour == "ping-close":
                await ws.send(json.dumps({"type": "ping"}))
                await ws.close()
            elif behaviour == "garbage-abort":
                await ws.send("{{{")
                ws.transport.abort()
            else:  # "abort": vanish without a close frame
                ws.transport.abort()

        behaviours = ["read-close", "ping-close", "garbage-abort", "abort", "raw-vanish"]
        started = time.monotonic()
        for _ in range(20):  # 20 waves of 50 concurrent subscribers
            await asyncio.gather(*(one(rng.choice(behaviours)) for _ in range(50)))
        print(f"1000 subscribers in {time.monotonic() - started:.1f} s")

        assert await settled(lambda: subscribers_gauge(server.base_url), lambda n: n == 0) == 0
        fds = await settled(lambda: asyncio.to_thread(open_fds, server.process.pid), lambda n: n <= baseline + 2)
        assert fds <= baseline + 2  # no socket left behind
        async with websockets.connect(server.ws_url, additional_headers=ADMIN) as ws:  # still serving
            assert json.loads(await ws.recv())["type"] == "hello"
