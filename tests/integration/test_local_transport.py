"""The local host's upstream transport (aiohttp) against the real mock upstream and its faults:
every failure surfaces as the port's UpstreamError or UpstreamTimeout, never as aiohttp's own."""

import asyncio
import json

import pytest

from flaregate.hosts.local.transport import AiohttpTransport
from flaregate.ports import UpstreamError, UpstreamTimeout

from .conftest import free_port

CHAT = "/v1/chat/completions"
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-transport-test"}


def body(stream: bool = False, text: str = "hello transport") -> bytes:
    return json.dumps({"model": "m", "stream": stream, "messages": [{"role": "user", "content": text}]}).encode()


@pytest.fixture
async def transport():
    t = AiohttpTransport()
    yield t
    await t.aclose()


async def test_json_response_with_lower_cased_headers(transport, upstream):
    response = await transport.send("POST", upstream.url(CHAT), HEADERS, body(), 5)
    payload = json.loads(await response.read())
    await response.aclose()
    assert response.status == 200 and response.headers["content-type"] == "application/json"
    assert payload["choices"][0]["message"]["content"] == "echo: hello transport"
    assert upstream.stats()["requests"][-1]["headers"]["authorization"] == "Bearer sk-transport-test"


async def test_stream_arrives_whole_and_connections_are_reused(transport, upstream):
    for _ in range(3):
        response = await transport.send("POST", upstream.url(CHAT), HEADERS, body(stream=True), 5)
        raw = b"".join([chunk async for chunk in response.aiter_bytes()])
        await response.aclose()
        assert response.status == 200 and raw.endswith(b"data: [DONE]\n\n")
    errors = await transport.send("POST", upstream.url("/v1/nowhere"), HEADERS, body(), 5)
    assert errors.status == 404 and b"unknown path" in await errors.read()
    await errors.aclose()


async def test_reset_before_the_response_is_an_upstream_error(transport, upstream):
    upstream.add_faults({"kind": "reset", "path": CHAT})
    with pytest.raises(UpstreamError) as info:
        await transport.send("POST", upstream.url(CHAT), HEADERS, body(), 5)
    assert not isinstance(info.value, UpstreamTimeout)


async def test_a_cut_stream_raises_while_reading(transport, upstream):
    upstream.add_faults({"kind": "stream_cut", "after_chunks": 2, "path": CHAT})
    response = await transport.send("POST", upstream.url(CHAT), HEADERS, body(stream=True), 5)
    await asyncio.sleep(0.2)  # the events and the cut both arrive before the first read
    received = []
    with pytest.raises(UpstreamError):
        async for chunk in response.aiter_bytes():
            received.append(chunk)
    await response.aclose()
    # Every event sent before the cut arrives, even those aiohttp had buffered unread.
    raw = b"".join(received)
    assert raw.count(b"data: ") == 2 and raw.endswith(b"\n\n") and b"data: [DONE]" not in raw


async def test_a_truncated_body_raises_on_read(transport, upstream):
    upstream.add_faults({"kind": "reset_mid_body", "path": CHAT})
    response = await transport.send("POST", upstream.url(CHAT), HEADERS, body(), 5)
    with pytest.raises(UpstreamError):
        await response.read()
    await response.aclose()


async def test_slow_answers_time_out(transport, upstream):
    upstream.add_faults([{"kind": "delay", "seconds": 5, "path": CHAT},
                         {"kind": "stream_stall", "after_chunks": 2, "seconds": 5, "path": CHAT}])
    with pytest.raises(UpstreamTimeout):
        await transport.send("POST", upstream.url(CHAT), HEADERS, body(), 0.3)
    stalled = await transport.send("POST", upstream.url(CHAT), HEADERS, body(stream=True), 0.3)
    with pytest.raises(UpstreamTimeout):
        async for _ in stalled.aiter_bytes():
            pass
    await stalled.aclose()
    # A stream abandoned half way (a client that went away) leaves the pool usable.
    response = await transport.send("POST", upstream.url(CHAT), HEADERS, body(stream=True), 5)
    async for _ in response.aiter_bytes():
        break
    await response.aclose()
    again = await transport.send("POST", upstream.url(CHAT), HEADERS, body(), 5)
    assert again.status == 200 and b"echo: hello transport" in await again.read()
    await again.aclose()


async def test_unreachable_and_unusable_urls_are_upstream_errors(transport):
    with pytest.raises(UpstreamError):
        await transport.send("POST", f"http://127.0.0.1:{free_port()}/v1/chat/completions", HEADERS, body(), 5)
    with pytest.raises(UpstreamError):
        await transport.send("POST", "not a url", HEADERS, body(), 5)
