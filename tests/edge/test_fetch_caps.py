"""The Worker's transport reads a whole body no further than its cap: refused by its
content-length before a byte is read, or once the chunks pass the cap; then cancelled."""

from __future__ import annotations

import pytest

from flaregate.hosts.edge.ports import FetchTransport
from flaregate.ports import DEFAULT_MAX_RESPONSE_BYTES, UpstreamLimits, UpstreamResponseTooLarge

from .conftest import FakeBodyStream, FakeFetchResponse

PIECE = b"x" * 65536
GIB_OF_PIECES = [PIECE] * (1 << 14)  # 1 GiB as 16 384 references to one 64 KiB piece


async def test_a_body_announced_over_the_cap_is_refused_unread(fake_http):
    body = FakeBodyStream(GIB_OF_PIECES)
    fake_http.responses.append(FakeFetchResponse(200, {"Content-Length": str(1 << 30)}, body))
    response = await FetchTransport().send("POST", "https://u.example", {}, b"{}", 5)
    response.limit(UpstreamLimits(max_response_bytes=1 << 20))
    with pytest.raises(UpstreamResponseTooLarge):
        await response.read()
    await response.aclose()
    assert body.chunks_read == 0 and body.cancelled


async def test_a_chunked_body_is_read_no_further_than_the_cap(fake_http):
    body = FakeBodyStream(GIB_OF_PIECES)
    fake_http.responses.append(FakeFetchResponse(200, {}, body))
    response = await FetchTransport().send("POST", "https://u.example", {}, b"{}", 5)
    with pytest.raises(UpstreamResponseTooLarge) as info:
        await response.read()  # no limit given: the default cap
    await response.aclose()
    assert info.value.limit == DEFAULT_MAX_RESPONSE_BYTES
    assert body.chunks_read == DEFAULT_MAX_RESPONSE_BYTES // len(PIECE) + 1 and body.cancelled


async def test_a_body_within_the_cap_is_read_whole(fake_http):
    body = FakeBodyStream([PIECE] * 4)
    fake_http.responses.append(FakeFetchResponse(200, {"Content-Length": str(4 * len(PIECE))}, body))
    response = await FetchTransport().send("POST", "https://u.example", {}, b"{}", 5)
    response.limit(UpstreamLimits(max_response_bytes=4 * len(PIECE)))
    assert await response.read() == PIECE * 4
    await response.aclose()
    assert not body.cancelled
