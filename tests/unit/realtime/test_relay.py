"""The Realtime relay with in-memory sockets: frames pass untouched and in order, the few it
reads are read, every limit ends the session once with an error event and a close code."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from flaregate.errors import GatewayError
from flaregate.realtime import events
from flaregate.realtime.relay import Relay
from flaregate.realtime.settings import RealtimeSettings
from tests.support.fakes import FakeClock


class Sock:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.closed: tuple[int, str] | None = None

    def send(self, data: Any) -> None:
        self.sent.append(data)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class Meter:
    def __init__(self, refuse_after: int | None = None, block: str | None = None) -> None:
        self.reserved = 0
        self.settled: list[Any] = []
        self.refuse_after = refuse_after
        self.block = block
        self.gate = asyncio.Event()
        self.gate.set()

    async def reserve(self) -> Any:
        await self.gate.wait()
        if self.refuse_after is not None and self.reserved >= self.refuse_after:
            raise GatewayError(429, "Budget 'daily' exceeded.", type="insufficient_quota", code="budget_exceeded")
        self.reserved += 1
        return f"reservation-{self.reserved}"

    async def settle(self, reservation: Any, usage: Any, response_id: Any, latency_ms: float) -> float:
        self.settled.append((reservation, usage.input_tokens, usage.output_tokens, response_id))
        return 0.01

    def guard(self, text: str) -> str | None:
        if self.block and self.block in text:
            raise GatewayError(400, "blocked", code="guardrail_blocked")
        return text.replace("secret@example.com", "[EMAIL]")


def done(rid: str, tokens_in: int, tokens_out: int) -> str:
    return json.dumps({"type": "response.done", "response": {"id": rid, "status": "completed", "usage": {
        "input_tokens": tokens_in, "output_tokens": tokens_out,
        "input_token_details": {"cached_tokens": 1, "audio_tokens": 2},
        "output_token_details": {"audio_tokens": 3}}}})


def rig(meter: Meter | None = None, guarded: bool = False, clock: FakeClock | None = None,
        **limits: Any) -> tuple[Relay, Sock, Sock, list[Relay]]:
    finished: list[Relay] = []

    async def on_end(relay: Relay) -> None:
        finished.append(relay)

    relay = Relay(RealtimeSettings(**limits), clock or FakeClock(), meter or Meter(), guarded, on_end)
    client, upstream = Sock(), Sock()
    relay.start(client, upstream)
    return relay, client, upstream, finished


def last_error(sock: Sock) -> dict:
    return json.loads([f for f in sock.sent if isinstance(f, str) and '"error"' in f][-1])["error"]


async def settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_frames_pass_untouched_and_a_response_create_reserves_first_keeping_the_order():
    async def go() -> None:
        meter = Meter()
        meter.gate.clear()  # the reservation is on its way
        relay, client, upstream, _ = rig(meter)
        first = '{"type":"input_audio_buffer.append","audio":"AAAA"}'
        relay.from_client(first)
        relay.from_client('{"type":"response.create"}')
        relay.from_client('{"type":"input_audio_buffer.append","audio":"BBBB"}')
        assert upstream.sent == [first]  # later frames wait behind the reservation
        meter.gate.set()
        await settle_loop()
        assert [json.loads(f)["type"] for f in upstream.sent] == [
            "input_audio_buffer.append", "response.create", "input_audio_buffer.append"]
        assert upstream.sent[0] is first  # the very object: not re-serialised
        relay.from_upstream('{"type":"response.output_audio.delta","delta":"xx"}')
        relay.from_upstream(done("resp_1", 10, 5))
        await settle_loop()
        assert meter.settled == [("reservation-1", 10, 5, "resp_1")]
        assert relay.stats.responses == 1 and relay.stats.cached_tokens == 1 and relay.stats.audio_tokens_out == 3
        assert len(client.sent) == 2

    asyncio.run(go())


def test_a_refused_reservation_ends_the_session_with_an_error_event_and_1008():
    async def go() -> None:
        relay, client, upstream, finished = rig(Meter(refuse_after=1))
        relay.from_client('{"type":"response.create"}')
        await settle_loop()
        relay.from_client('{"type":"response.create"}')
        await settle_loop()
        assert last_error(client)["code"] == "budget_exceeded"
        assert client.closed is not None and client.closed[0] == events.POLICY
        assert upstream.closed is not None and relay.ended
        await settle_loop()
        assert finished == [relay] and relay.stats.ended == "budget_exceeded"

    asyncio.run(go())


def test_too_many_messages_in_a_second_end_the_session():
    async def go() -> None:
        relay, client, upstream, _ = rig(max_messages_per_second=5)
        for i in range(6):
            relay.from_client(f'{{"type":"input_audio_buffer.append","n":{i}}}')
        assert len(upstream.sent) == 5
        assert last_error(client)["code"] == "rate_limit_exceeded" and client.closed[0] == events.POLICY

    asyncio.run(go())


def test_an_oversized_frame_ends_the_session_with_1009_and_is_not_forwarded():
    async def go() -> None:
        relay, client, upstream, _ = rig(max_message_bytes=1024)
        relay.from_client("é" * 600)  # 600 characters, 1 200 bytes: measured in bytes
        assert upstream.sent == [] and client.closed[0] == events.TOO_BIG
        relay.from_client("late")  # nothing after the end
        assert upstream.sent == []

    asyncio.run(go())


def test_the_session_time_limit_and_the_idle_timeout_close_with_their_codes():
    async def go() -> None:
        relay, client, _, _ = rig(max_session_seconds=0.05, idle_timeout_seconds=10)
        await asyncio.sleep(0.1)
        assert last_error(client)["code"] == "session_expired" and client.closed[0] == events.DURATION
        clock = FakeClock()
        relay, client, _, _ = rig(clock=clock, idle_timeout_seconds=0.05)
        await asyncio.sleep(0.1)
        assert not relay.ended  # the clock says no time passed: the check looks again later
        clock.advance(1)
        await asyncio.sleep(0.1)
        assert last_error(client)["code"] == "idle_timeout" and client.closed[0] == events.IDLE

    asyncio.run(go())


def test_a_guarded_item_is_redacted_and_a_blocked_one_refused_while_the_session_goes_on():
    async def go() -> None:
        relay, client, upstream, _ = rig(Meter(block="forbidden"), guarded=True)
        relay.from_client('{"type":"conversation.item.create","item":{"content":[{"text":"secret@example.com"}]}}')
        relay.from_client('{"type":"conversation.item.create","item":{"content":[{"text":"forbidden"}]}}')
        relay.from_client('{"type":"input_audio_buffer.commit"}')
        await settle_loop()
        assert len(upstream.sent) == 2 and "[EMAIL]" in upstream.sent[0] and "commit" in upstream.sent[1]
        assert last_error(client)["code"] == "guardrail_blocked" and not relay.ended

    asyncio.run(go())


def test_a_provider_drop_tells_the_client_and_a_normal_close_does_not():
    async def go() -> None:
        relay, client, _, _ = rig()
        relay.upstream_closed(1006)
        assert last_error(client)["code"] == "upstream_disconnected" and client.closed[0] == events.UPSTREAM_ERROR
        relay, client, _, _ = rig()
        relay.upstream_closed(1000)
        assert client.sent == [] and client.closed[0] == events.NORMAL
        relay, client, upstream, _ = rig()
        relay.client_closed(1000)
        assert client.closed is None and upstream.closed is not None  # the client left: only the provider is closed

    asyncio.run(go())


@pytest.mark.parametrize("text", ['"response.done" said the user', '{"type":"response.done"}',
                                  '{"type":"response.done","response":{"usage":{"input_tokens":-5}}}', "[]", "{"])
def test_a_frame_that_only_looks_like_response_done_is_relayed_and_charges_nothing_odd(text):
    async def go() -> None:
        meter = Meter()
        relay, client, _, _ = rig(meter)
        relay.from_upstream(text)
        await settle_loop()
        assert client.sent == [text]
        assert all(s[1] >= 0 for s in meter.settled)

    asyncio.run(go())
