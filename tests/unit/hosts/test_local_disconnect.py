"""The local host's streamed answers (LocalHost._send) with the ASGI server played by fakes:
a client that leaves stops the stream at once, even while its upstream is silent."""

from __future__ import annotations

import asyncio
from typing import Any

from flaregate.hosts.local.app import LocalHost
from flaregate.http import Response


class Client:
    """uvicorn's side: ``send`` records, ``receive`` says http.disconnect when the client
    leaves, or once the response is complete (as uvicorn does)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.left = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.left.set()

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


class Silent:
    """A relay that sends its first chunks, then waits on a silent upstream; it records how
    it was left."""

    def __init__(self, *first: bytes) -> None:
        self.first = first
        self.outcome: str | None = None
        self.closed = False

    async def chunks(self) -> Any:
        try:
            for chunk in self.first:
                yield chunk
            await asyncio.Event().wait()
        except (GeneratorExit, asyncio.CancelledError) as exc:
            self.outcome = type(exc).__name__
            raise
        finally:
            self.closed = True  # the core closes its upstream here


def streamed(chunks: Any) -> Response:
    return Response(200, {"content-type": "text/event-stream"}, chunks)


async def test_a_client_that_leaves_a_silent_stream_stops_it_at_once():
    client, relay = Client(), Silent(b"data: 1\n\n")
    sending = asyncio.ensure_future(LocalHost._send(streamed(relay.chunks()), client.send, client.receive))
    for _ in range(100):
        if client.bodies():
            break
        await asyncio.sleep(0.001)
    client.left.set()
    await asyncio.wait_for(sending, 1.0)
    assert relay.outcome == "CancelledError" and relay.closed  # unwound where it waited
    assert client.bodies() == [b"data: 1\n\n"]  # no end of body for a gone client


async def test_a_stream_that_ends_is_sent_whole_and_leaves_nothing_running():
    async def chunks() -> Any:
        yield b"data: 1\n\n"
        yield b"data: [DONE]\n\n"

    client = Client()
    before = asyncio.all_tasks()
    await asyncio.wait_for(LocalHost._send(streamed(chunks()), client.send, client.receive), 1.0)
    assert client.bodies() == [b"data: 1\n\n", b"data: [DONE]\n\n", b""]
    await asyncio.sleep(0)
    assert asyncio.all_tasks() <= before | {asyncio.current_task()}


async def test_a_server_whose_receive_fails_still_gets_the_whole_stream():
    async def chunks() -> Any:
        yield b"data: 1\n\n"
        await asyncio.sleep(0.01)
        yield b"data: [DONE]\n\n"

    client = Client()

    async def broken() -> dict[str, Any]:
        raise RuntimeError("no receive here")

    await asyncio.wait_for(LocalHost._send(streamed(chunks()), client.send, broken), 1.0)
    assert client.bodies() == [b"data: 1\n\n", b"data: [DONE]\n\n", b""]


async def test_a_relay_failure_still_propagates():
    async def chunks() -> Any:
        yield b"data: 1\n\n"
        raise ValueError("the relay broke")

    client, failed = Client(), None
    try:
        await LocalHost._send(streamed(chunks()), client.send, client.receive)
    except ValueError as exc:
        failed = exc
    assert str(failed) == "the relay broke"
