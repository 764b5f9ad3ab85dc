"""The upstream caller holds every answer to the caps (UPSTREAM_MAX_*): a whole body over
its cap is a 502 upstream_response_too_large; a stream whose event (or unterminated line)
or total passes its cap ends in UpstreamEventTooLarge / UpstreamStreamTooLarge, which the
relays turn into their error event. Reading stops at the cap; nothing over it is passed on."""

from __future__ import annotations

import json

import pytest

from flaregate.config import settings_from_vars
from flaregate.errors import GatewayError
from flaregate.ports import UpstreamEventTooLarge, UpstreamResponseTooLarge, UpstreamStreamTooLarge
from flaregate.providers.anthropic import AnthropicProvider
from flaregate.routing.resilience import ResiliencePolicy, resilience_from_vars
from flaregate.routing.routes import Target
from flaregate.routing.upstream_call import UpstreamCaller
from tests.support.fakes import FakeClock

KIB, MIB = 1024, 1 << 20
CAPS = {"UPSTREAM_MAX_EVENT_BYTES": str(MIB), "UPSTREAM_MAX_STREAM_BYTES": str(4 * MIB),
        "UPSTREAM_MAX_RESPONSE_BYTES": str(MIB), "UPSTREAM_MAX_ATTEMPTS": "1"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"more "}}]}\n\n'


class Upstream:
    """A provider's raw response: chunks made as they are pulled (an endless one too)."""

    def __init__(self, chunks, headers=None, status=200):
        self.status = status
        self.headers = {"content-type": "text/event-stream", **(headers or {})}
        self._chunks = chunks
        self.pulled = 0
        self.closed = False
        self.limits = None

    def limit(self, limits):
        self.limits = limits

    async def aiter_bytes(self):
        for chunk in self._chunks:
            self.pulled += len(chunk)
            yield chunk

    async def read(self):  # as a transport's: refused by its length, or once over the cap
        if int(self.headers.get("content-length", 0)) > self.limits.max_response_bytes:
            raise UpstreamResponseTooLarge("a body", self.limits.max_response_bytes)
        parts = []
        async for chunk in self.aiter_bytes():
            parts.append(chunk)
            if sum(map(len, parts)) > self.limits.max_response_bytes:
                raise UpstreamResponseTooLarge("a body", self.limits.max_response_bytes)
        return b"".join(parts)

    async def aclose(self):
        self.closed = True


class Provider:
    kind = "openai"
    operations = frozenset({"chat"})

    def __init__(self, response):
        self.name = "p"
        self.response = response

    async def chat(self, body, model, forward, *, timeout=None):
        return self.response


class Transport:
    def __init__(self, response):
        self.response = response

    async def send(self, method, url, headers, body, timeout):
        return self.response


def caller(**extra: str) -> UpstreamCaller:
    return UpstreamCaller(settings_from_vars({**CAPS, **extra}), FakeClock(), lambda event: None)


async def call(provider, stream: bool):
    return await caller().call([Target(provider, "m")], {**CHAT, "stream": stream}, {}, {})


def endless_line():
    yield b"data: "
    while True:
        yield b"x" * KIB


def endless_events():
    while True:
        yield EVENT * 10


def test_the_caps_are_settings_with_their_defaults():
    policy = ResiliencePolicy()
    assert (policy.max_event_bytes, policy.max_response_bytes, policy.max_stream_bytes,
            policy.single_flight_max_bytes) == (4 * MIB, 16 * MIB, 64 * MIB, 4 * MIB)
    assert resilience_from_vars({"UPSTREAM_MAX_EVENT_BYTES": "2048", "UPSTREAM_MAX_RESPONSE_BYTES": "4096",
                                 "UPSTREAM_MAX_STREAM_BYTES": "8192", "SINGLE_FLIGHT_MAX_BYTES": "0"}) == {
        "max_event_bytes": "2048", "max_response_bytes": "4096", "max_stream_bytes": "8192",
        "single_flight_max_bytes": "0"}
    settings = settings_from_vars(CAPS)
    assert settings.resilience.limits.max_stream_bytes == 4 * MIB
    with pytest.raises(ValueError):
        ResiliencePolicy(max_event_bytes=128 * MIB)  # over the ceiling the parsers behind it allow


@pytest.mark.parametrize("headers", [{"content-length": str(1 << 30)}, {}], ids=["content-length", "chunked"])
async def test_a_body_over_the_cap_is_a_502_and_is_not_read_on(headers):
    upstream = Upstream(iter([b'{"choices": ["' + b"x" * (64 * KIB)] * (1 << 14)), headers, status=200)
    upstream.headers["content-type"] = "application/json"
    with pytest.raises(GatewayError) as info:
        await call(Provider(upstream), stream=False)
    assert info.value.status == 502 and info.value.code == "upstream_response_too_large"
    assert "UPSTREAM_MAX_RESPONSE_BYTES" in info.value.message
    assert upstream.pulled <= MIB + 64 * KIB and upstream.closed  # stopped at the cap, then hung up


async def test_a_response_that_ignores_the_cap_is_still_refused():
    class Unlimited(Upstream):
        async def read(self):
            return json.dumps({"choices": [], "pad": "x" * (2 * MIB)}).encode()

    with pytest.raises(GatewayError) as info:
        await call(Provider(Unlimited([])), stream=False)
    assert info.value.code == "upstream_response_too_large"


async def test_an_endless_line_ends_the_stream_at_the_event_cap():
    upstream = Upstream(endless_line())
    _, stream = await call(Provider(upstream), stream=True)
    out = []
    with pytest.raises(UpstreamEventTooLarge) as info:
        async for chunk in stream.aiter_bytes():
            out.append(chunk)
    await stream.aclose()
    assert out == []  # no partial event ever reaches the client
    assert upstream.pulled <= MIB + KIB and upstream.closed
    assert str(info.value).startswith("upstream_event_too_large")
    # linear: each byte searched about once (a chunk's bytes, and two before it)
    assert stream.events.scanned <= upstream.pulled + 2 * (upstream.pulled // KIB + 2)


async def test_a_never_ending_stream_ends_at_the_stream_cap():
    upstream = Upstream(endless_events())
    _, stream = await call(Provider(upstream), stream=True)
    passed = 0
    with pytest.raises(UpstreamStreamTooLarge) as info:
        async for chunk in stream.aiter_bytes():
            passed += len(chunk)
    await stream.aclose()
    assert 3 * MIB < passed <= 4 * MIB  # whole events, up to the cap
    assert "UPSTREAM_MAX_STREAM_BYTES" in str(info.value)


async def test_a_legitimate_large_event_passes_whole():
    big = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"y" * (MIB // 2) + b'"}}]}\n\n'
    pieces = [big[i:i + KIB] for i in range(0, len(big), KIB)] + [b"data: [DONE]\n\n"]
    _, stream = await call(Provider(Upstream(iter(pieces))), stream=True)
    out = [chunk async for chunk in stream.aiter_bytes()]
    await stream.aclose()
    assert b"".join(out) == big + b"data: [DONE]\n\n" and out[0] == big


async def test_an_endless_line_through_a_translation_is_a_502_before_the_first_byte():
    upstream = Upstream(endless_line())
    provider = AnthropicProvider("a", "http://anthropic.invalid/v1", None, Transport(upstream), 5)
    with pytest.raises(GatewayError) as info:
        await caller().call([Target(provider, "claude")], {**CHAT, "stream": True}, {}, {})
    assert info.value.status == 502 and info.value.code == "upstream_event_too_large"
    assert upstream.pulled <= MIB + KIB and upstream.closed
    assert upstream.limits is not None and upstream.limits.max_event_bytes == MIB  # reached the transport
