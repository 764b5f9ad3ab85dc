"""The local host's transport reads a whole body no further than its cap, against the real
mock's 1 GiB body (announced by content-length, or chunked): refused up front, or once the
cap is passed, and the connection is dropped (the mock sees the hang-up)."""

import asyncio
import json
import time

import httpx
import pytest

from flaregate.hosts.local.transport import AiohttpTransport
from flaregate.ports import DEFAULT_MAX_RESPONSE_BYTES, UpstreamLimits, UpstreamResponseTooLarge

CHAT = "/v1/chat/completions"
HEADERS = {"content-type": "application/json"}
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
MIB = 1 << 20


@pytest.fixture
async def transport():
    t = AiohttpTransport()
    yield t
    await t.aclose()


async def hostile_record(upstream) -> dict:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() < deadline:  # the loop runs meanwhile: the hang-up goes out
            records = (await client.get(upstream.url("/_mock/hostile"))).json()["hostile"]
            if records:
                return records[-1]
            await asyncio.sleep(0.05)
    raise AssertionError("the mock's huge body never ended: the transport kept reading")


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
async def test_a_1gb_body_is_refused_at_the_cap(transport, upstream, length):
    upstream.reset()
    upstream.add_faults({"kind": "huge_body", "length": length, "path": CHAT})
    response = await transport.send("POST", upstream.url(CHAT), HEADERS, BODY, 30)
    response.limit(UpstreamLimits(max_response_bytes=4 * MIB))
    with pytest.raises(UpstreamResponseTooLarge) as info:
        await response.read()
    await response.aclose()
    assert info.value.code == "upstream_response_too_large" and info.value.limit == 4 * MIB
    record = await hostile_record(upstream)
    assert record["how"] == "disconnect"
    assert record["bytes"] < 64 * MIB  # the cap, and what the sockets held: never the 1 GiB


async def test_without_a_limit_the_default_cap_holds(transport, upstream):
    upstream.reset()
    upstream.add_faults({"kind": "huge_body", "length": False, "path": CHAT})
    response = await transport.send("POST", upstream.url(CHAT), HEADERS, BODY, 30)
    with pytest.raises(UpstreamResponseTooLarge) as info:
        await response.read()
    await response.aclose()
    assert info.value.limit == DEFAULT_MAX_RESPONSE_BYTES
    assert (await hostile_record(upstream))["how"] == "disconnect"


async def test_a_body_within_the_cap_is_read_whole(transport, upstream):
    upstream.reset()
    upstream.add_faults({"kind": "huge_body", "bytes": 3 * MIB, "length": False, "path": CHAT})
    response = await transport.send("POST", upstream.url(CHAT), HEADERS, BODY, 30)
    response.limit(UpstreamLimits(max_response_bytes=4 * MIB))
    body = await response.read()
    await response.aclose()
    assert len(body) == 3 * MIB and body.startswith(b'{"id":"chatcmpl-huge"')
    assert (await hostile_record(upstream))["how"] == "complete"
