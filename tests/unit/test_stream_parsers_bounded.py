"""Each SSE parser of an upstream stream is linear in the bytes it is fed and holds at most
one event: the translators' parser, the cache's stream assembler, the output guards, a
translated response's own check of the raw stream. (The upstream caller's stream is in
tests/unit/routing/test_upstream_caps.py.)"""

from __future__ import annotations

import json

import pytest

from flaregate.cache.sse_completion import StreamAssembler
from flaregate.guardrails import Guardrails, GuardrailSettings, checks
from flaregate.ports import (
    UpstreamEventTooLarge,
    UpstreamLimits,
    UpstreamResponseTooLarge,
    UpstreamStreamTooLarge,
)
from flaregate.providers.anthropic import OpenAIFromAnthropic
from flaregate.providers.anthropic_translate import SseParser

KIB, MIB = 1024, 1 << 20
GUARDS = GuardrailSettings.model_validate({"policies": {"redact": {"pii": ["all"]}}, "routes": {"gpt": "redact"}})


def endless_line(total: int = 4 * MIB, size: int = KIB):
    yield b"data: "
    for _ in range(total // size):
        yield b"x" * size


async def agen(chunks):
    for chunk in chunks:
        yield chunk


class RawStream:
    """A transport's response: the given chunks, counted as they are pulled."""

    def __init__(self, chunks, headers=None):
        self.status = 200
        self.headers = {"content-type": "text/event-stream", **(headers or {})}
        self._chunks = chunks
        self.pulled = 0
        self.limits: UpstreamLimits | None = None

    def limit(self, limits):
        self.limits = limits

    async def aiter_bytes(self):
        for chunk in self._chunks:
            self.pulled += len(chunk)
            yield chunk

    async def read(self):
        if self.limits and int(self.headers.get("content-length", 0)) > self.limits.max_response_bytes:
            raise UpstreamResponseTooLarge("a body", self.limits.max_response_bytes)
        return b"".join(self._chunks)

    async def aclose(self):
        pass


# -- the translators' parser ----------------------------------------------------------------
def test_sse_parser_refuses_a_line_over_its_cap_and_searches_each_byte_once():
    parser, fed, chunks = SseParser(MIB), 0, 0
    with pytest.raises(UpstreamEventTooLarge):
        for chunk in endless_line():
            fed += len(chunk)
            chunks += 1
            assert parser.feed(chunk) == []
    assert fed <= MIB + KIB
    assert parser._buffer.scanned <= fed + 2 * chunks


def test_sse_parser_reads_a_crlf_boundary_split_across_chunks():
    parser = SseParser()
    assert parser.feed(b"event: message_stop\r\ndata: {}\r") == []
    assert parser.feed(b"\n\r\n") == [("message_stop", "{}")]  # was missed: CR and LF in two chunks


# -- the cache's stream assembler -----------------------------------------------------------
def test_stream_assembler_is_linear_on_a_long_line_and_still_assembles():
    assembler, fed, chunks = StreamAssembler(8 * MIB), 0, 0
    for chunk in endless_line(2 * MIB):
        fed += len(chunk)
        chunks += 1
        assembler.feed(chunk)
    assert assembler._events.scanned <= fed + 2 * chunks
    assert assembler.feed(b"\n\n") is None and assembler.problem == "the stream carried an event that is not JSON"
    ok = StreamAssembler(MIB)
    stream = (b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"he"}}]}\r\n\r\n'
              b'data: {"choices":[{"index":0,"delta":{"content":"llo"},"finish_reason":"stop"}]}\r\n\r\n'
              b"data: [DONE]\r\n\r\n")
    for i in range(len(stream)):  # one byte at a time, CRLF split everywhere
        ok.feed(stream[i:i + 1])
    completion = ok.completion()
    assert completion is not None and completion["choices"][0]["message"]["content"] == "hello"


# -- the output guards ----------------------------------------------------------------------
def _chat_event(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode()


async def test_the_chat_guard_checks_crlf_events_too():
    """A CRLF stream was never cut into events (only LF LF was looked for): it was held
    whole to its end and passed on unchecked."""
    guard = Guardrails(GUARDS)
    stream = [_chat_event("mail a@b.io") + b"\r\n\r\n", _chat_event("ok") + b"\r\n\r\ndata: [DONE]\r\n\r\n"]
    out = b"".join([c async for c in checks.guard_chat_stream(guard, guard.policy_for("gpt", "k"),
                                                              agen(stream), {})])
    assert b"a@b.io" not in out and b"[REDACTED_EMAIL]" in out and out.endswith(b"data: [DONE]\n\n")


async def test_a_guard_ends_the_stream_on_an_event_it_cannot_hold(monkeypatch):
    monkeypatch.setattr(checks, "MAX_EVENT_BYTES", MIB)
    guard = Guardrails(GUARDS)
    policy = guard.policy_for("gpt", "k")
    out = [c async for c in checks.guard_chat_stream(guard, policy, agen(endless_line()), {})]
    error = json.loads(out[-1].split(b"\n\n")[0][6:])["error"]
    assert error["code"] == "upstream_event_too_large" and error["type"] == "api_error"
    assert out[-1].endswith(b"data: [DONE]\n\n") and b"xxxx" not in b"".join(out)
    typed = [c async for c in checks.guard_typed_stream(guard, policy, agen(endless_line()), {})]
    assert json.loads(typed[-1].split(b"data: ", 1)[1])["code"] == "upstream_event_too_large"


# -- a translated response holds the raw stream to the caps ---------------------------------
async def test_a_translated_stream_refuses_an_endless_line_before_holding_it():
    raw = RawStream(endless_line())
    answer = OpenAIFromAnthropic(raw, "claude", stream=True, include_usage=False)
    answer.limit(UpstreamLimits(max_event_bytes=MIB))
    with pytest.raises(UpstreamEventTooLarge):
        [c async for c in answer.aiter_bytes()]
    assert raw.pulled <= MIB + KIB
    assert raw.limits is not None and raw.limits.max_event_bytes == MIB  # passed on to the transport's response


async def test_a_translated_stream_of_endless_pings_is_counted_though_it_yields_nothing():
    ping = b'event: ping\ndata: {"type": "ping"}\n\n' * 100

    def pings():
        while True:
            yield ping

    answer = OpenAIFromAnthropic(RawStream(pings()), "claude", stream=True, include_usage=False)
    answer.limit(UpstreamLimits(max_stream_bytes=2 * MIB))
    with pytest.raises(UpstreamStreamTooLarge):
        [c async for c in answer.aiter_bytes()]


async def test_a_translated_whole_body_keeps_to_the_response_cap():
    raw = RawStream([b"{}"], headers={"content-length": str(1 << 30)})
    answer = OpenAIFromAnthropic(raw, "claude", stream=False, include_usage=False)
    answer.limit(UpstreamLimits(max_response_bytes=MIB))
    with pytest.raises(UpstreamResponseTooLarge):
        await answer.read()
