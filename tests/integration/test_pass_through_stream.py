"""Pass-through streams (docs/architecture.md, "Pass-through streams"), through the real
server on either host, with the official openai SDK as the client.

A stream nothing needs to change (an OpenAI-kind upstream, no answer guardrail, no request
log copy of the answer) reaches the client as the upstream sent it: byte for byte the mock
upstream's bytes. On the Worker the upstream's body goes to the client natively (a tee'd
body) and the core reads the copy; locally the relay forwards the same bytes. Either way the
usage read from the stream settles the key's token and money budgets and the request log,
and a completed stream is cached. When the upstream breaks mid-event, the client still gets
the gateway's error event after what it had: on the Worker that includes the upstream's
partial last event, ended so that it parses (the SDK raises the gateway's error), locally
only the whole events before it. A never-ending stream is cut at the stream cap: the gateway
hangs up on the upstream there (it neither reads on nor buffers) and caches nothing; a
client that stops reading holds the upstream back (on the Worker the copy waits for the
client's branch, which would otherwise buffer the stream up to the cap). A stream that pauses
is still the upstream's bytes, and its copy whole (the Worker reads the copy in batches that
a pause hands over). The
paths that must not pass through (an answer guardrail, a translated provider, an answer the
request log keeps) keep the relay: on a break the client never holds a partial event.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from flaregate.security.signing import sign_request
from tests.support.mock_upstream import MockUpstreamProcess

from .conftest import ADMIN_KEY, GATEWAY_KEY, TARGET, run_gateway

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CHAT = "/v1/chat/completions"
# UPSTREAM_MAX_STREAM_BYTES, the default: more than the sockets between the Worker and a
# client that stops reading can hold, so that only the gateway's backpressure keeps such a
# client's stream from reaching it.
STREAM_CAP = 64 << 20
# The mock's fixed reply: 42 tokens in, 20 out; priced here at 1000 / 2000 USD per 1M tokens.
TOKENS_IN, TOKENS_OUT = 42, 20
COST = (TOKENS_IN * 1000 + TOKENS_OUT * 2000) / 1e6
FIXED_TEXT = "".join(f"bench-token-{i:02d} " for i in range(19)) + "bench-token-19."
GUARDRAILS = {"policies": {"out": {"pii": ["email"], "input": False}}, "routes": {"gpt-guarded": "out"}}


@pytest.fixture(scope="module")
def fixed() -> Iterator[MockUpstreamProcess]:
    """The mock upstream answering every chat with the same reply: its bytes are known."""
    with MockUpstreamProcess(extra_args=["--fixed"]) as mock:
        yield mock


@pytest.fixture(scope="module")
def server(fixed, tmp_path_factory):
    base = fixed.base_url + "/v1"
    priced = {"provider": "upstream", "input_price_per_1m": 1000, "output_price_per_1m": 2000}
    providers = [{"name": "upstream", "kind": "openai", "base_url": base},
                 {"name": "claude", "kind": "anthropic", "base_url": base}]
    routes = {"gpt-test": [priced], "gpt-guarded": ["upstream"], "gpt-logged": ["upstream"], "claude-test": ["claude"]}
    env = {
        "FLAREGATE_API_KEYS": GATEWAY_KEY,
        "FLAREGATE_ADMIN_KEY": ADMIN_KEY,
        "FLAREGATE_PROVIDERS": json.dumps(providers),
        "FLAREGATE_ROUTES": json.dumps(routes),
        "FLAREGATE_RATE_LIMITS": json.dumps([{"name": "tpm", "algorithm": "fixed_window", "unit": "tokens",
                                              "limit": 10_000_000, "window_seconds": 366 * 86400}]),
        "FLAREGATE_BUDGETS": json.dumps([{"name": "daily", "period": "day", "limit_usd": 1000}]),
        "FLAREGATE_GUARDRAILS": json.dumps(GUARDRAILS),
        # The request log keeps answers, except on the routes that pass through.
        "LOG_BODIES": "response",
        "LOG_PRIVATE_ROUTES": "gpt-test,gpt-guarded,claude-test",
        "CACHE_TTL_SECONDS": "300",
        "UPSTREAM_MAX_ATTEMPTS": "1",
        "CIRCUIT_FAILURE_THRESHOLD": "1000",
    }
    with run_gateway(tmp_path_factory.mktemp("pass-through"), env) as gateway:
        yield gateway


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=60)


@pytest.fixture(autouse=True)
def clean(fixed):
    fixed.reset()
    yield
    fixed.reset()


def messages() -> list[dict]:
    # A fresh prompt: a cache miss (the fixed reply does not depend on it).
    return [{"role": "user", "content": f"pass through {uuid.uuid4().hex}"}]


def upstream_bytes(fixed: MockUpstreamProcess, asked: list[dict], model: str = "gpt-test") -> bytes:
    """The stream the mock sends for these messages, asked of it directly."""
    request = {"model": model, "stream": True, "stream_options": {"include_usage": True}, "messages": asked}
    with httpx.stream("POST", fixed.base_url + CHAT, json=request, timeout=30) as response:
        return response.read()


def raw_stream(client: openai.OpenAI, model: str, asked: list[dict], request_id: str) -> tuple[dict, bytes]:
    """The SDK's own request, its response's headers and bytes as they came."""
    with client.chat.completions.with_streaming_response.create(
            model=model, messages=asked, stream=True, stream_options={"include_usage": True}, max_tokens=50,
            extra_headers={"x-request-id": request_id}) as response:
        assert response.status_code == 200
        return dict(response.headers), b"".join(response.iter_bytes())


def record(server, request_id: str) -> dict:
    deadline = time.monotonic() + 30  # a stream's record is written when it ends, in batches
    while True:
        response = httpx.get(f"{server.base_url}/v1/logs/{request_id}", headers=ADMIN, timeout=10)
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return response.json()
        time.sleep(0.2)


def usage(server) -> dict:
    path = "/admin/ratelimits/key_" + hashlib.sha256(GATEWAY_KEY.encode()).hexdigest()[:16]
    response = httpx.get(server.base_url + path, headers={**ADMIN, **sign_request(ADMIN_KEY, "GET", path)})
    assert response.status_code == 200, response.text
    used = {row["policy"]: row["used"] for row in response.json()["limits"]}
    return {"tpm": used.get("tpm", 0), "daily": used.get("daily", 0.0)}  # a policy not used yet: none


def whole_events(data: bytes) -> bytes:
    end = data.rfind(b"\n\n")
    return data[: end + 2] if end >= 0 else b""


def events(data: bytes) -> list[bytes]:
    return [e for e in data.split(b"\n\n") if e.strip()]


def data_of(event: bytes) -> dict:
    return json.loads(event.split(b"data: ", 1)[1])


def break_midway(fixed: MockUpstreamProcess, path: str = CHAT) -> None:
    fixed.add_faults([{"kind": "reset_mid_body", "path": path}])


def test_a_stream_is_the_upstreams_bytes_and_settles_budgets_logs_and_the_cache(server, fixed, client):
    asked = messages()
    expected = upstream_bytes(fixed, asked)
    assert expected.endswith(b"data: [DONE]\n\n") and expected.count(b"data: ") > 20
    before = usage(server)
    request_id = f"req_pass_{uuid.uuid4().hex[:8]}"
    headers, received = raw_stream(client, "gpt-test", asked, request_id)
    assert headers["content-type"].startswith("text/event-stream")
    assert received == expected  # byte for byte
    logged = record(server, request_id)
    assert logged["stream_outcome"] == "complete"
    assert (logged["tokens_in"], logged["tokens_out"]) == (TOKENS_IN, TOKENS_OUT)  # read from the copy
    deadline = time.monotonic() + 10  # the settlement runs in the background after the last byte
    while (after := usage(server))["tpm"] != before["tpm"] + TOKENS_IN + TOKENS_OUT and time.monotonic() < deadline:
        time.sleep(0.1)
    assert after["tpm"] == before["tpm"] + TOKENS_IN + TOKENS_OUT  # the real usage, not the reservation
    assert after["daily"] == pytest.approx(before["daily"] + COST)
    # The copy filled the cache: the same question, not streamed, is a hit with the same answer.
    again = client.chat.completions.with_raw_response.create(model="gpt-test", messages=asked, max_tokens=50)
    assert again.headers["x-flaregate-cache"] == "HIT", dict(again.headers)
    assert again.parse().choices[0].message.content == FIXED_TEXT
    assert fixed.stats()["total"] == 2  # the direct ask and the gateway's one miss


def test_a_stream_that_pauses_is_the_upstreams_bytes_and_its_copy_is_whole(server, fixed, client):
    """The upstream slows down for its last events (each 0.4 s apart: longer than the copy's
    batches wait on the Worker, which then hand over what they hold and read on chunk by
    chunk): the client still gets every byte once, in order, and the copy sees them all
    (usage from the last event, and the answer cached)."""
    asked = messages()
    expected = upstream_bytes(fixed, asked)
    count = expected.count(b"data: ")
    fixed.add_faults([{"kind": "stream_slow", "path": CHAT, "after_chunks": count - 3, "interval": 0.4}])
    request_id = f"req_pause_{uuid.uuid4().hex[:8]}"
    _, received = raw_stream(client, "gpt-test", asked, request_id)
    assert received == expected  # byte for byte (0.4 s is shorter than a keep-alive comment's wait)
    logged = record(server, request_id)
    assert logged["stream_outcome"] == "complete"
    assert (logged["tokens_in"], logged["tokens_out"]) == (TOKENS_IN, TOKENS_OUT)
    again = client.chat.completions.with_raw_response.create(model="gpt-test", messages=asked, max_tokens=50)
    assert again.headers["x-flaregate-cache"] == "HIT"
    assert again.parse().choices[0].message.content == FIXED_TEXT


def test_the_sdk_reads_a_passed_through_stream(client):
    chunks = list(client.chat.completions.create(model="gpt-test", messages=messages(), stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FIXED_TEXT
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == TOKENS_OUT


def test_a_stream_broken_mid_event_ends_with_the_gateways_error_event(server, fixed, client):
    asked = messages()
    expected = upstream_bytes(fixed, asked)
    half = expected[: len(expected) // 2]
    assert not half.endswith(b"\n\n")  # the break falls inside an event
    break_midway(fixed)
    request_id = f"req_break_{uuid.uuid4().hex[:8]}"
    _, received = raw_stream(client, "gpt-test", asked, request_id)
    got = events(received)
    assert got[-1] == b"data: [DONE]"
    error = data_of(got[-2])["error"]
    assert error["code"] in ("upstream_stream_interrupted", "upstream_stream_truncated"), error
    if TARGET == "edge":  # natively: the partial event too, ended so that it parses, carrying the error
        assert received.startswith(half), received[-300:]
        assert data_of(got[-3])["error"] == error
        assert len(got) == len(events(half)) + 2
    else:  # the relay holds a partial event back
        assert received == whole_events(half) + b"".join(e + b"\n\n" for e in got[-2:])
    for event in got[:-1]:
        data_of(event)  # every event parses
    logged = record(server, request_id)
    assert logged["stream_outcome"] in ("interrupted", "truncated")
    # Nothing broken was cached: the same question goes upstream again.
    again = client.chat.completions.with_raw_response.create(model="gpt-test", messages=asked, max_tokens=50)
    assert again.headers["x-flaregate-cache"] == "MISS"


def test_the_sdk_raises_the_gateways_error_on_a_broken_stream(fixed, client):
    break_midway(fixed)
    received = []
    with pytest.raises(openai.APIError, match="interrupted") as caught:
        for chunk in client.chat.completions.create(model="gpt-test", messages=messages(), stream=True):
            received.append(chunk)
    assert received  # what came before the break
    assert caught.value.code == "upstream_stream_interrupted"


def hostile_end(fixed: MockUpstreamProcess) -> dict:
    """How the mock's hostile answer ended, once it did."""
    deadline = time.monotonic() + 30
    while not (ended := httpx.get(fixed.base_url + "/_mock/hostile", timeout=10).json()["hostile"]):
        assert time.monotonic() < deadline, "the gateway kept reading the never-ending stream"
        time.sleep(0.1)
    return ended[-1]


def test_a_never_ending_stream_is_cut_at_the_cap_and_not_cached(server, fixed, client):
    asked = messages()
    fixed.add_faults([{"kind": "endless_stream", "path": CHAT}])
    _, received = raw_stream(client, "gpt-test", asked, f"req_endless_{uuid.uuid4().hex[:8]}")
    assert len(received) > STREAM_CAP - (1 << 20)  # up to the cap (the relay: short of the chunk that crossed it)
    got = events(received[-4096:])
    assert got[-1] == b"data: [DONE]"
    assert data_of(got[-2])["error"]["code"] == "upstream_stream_too_large", got[-2]
    data_of(got[-3])  # the cut came at the end of an event: the one before the error is whole
    ended = [hostile_end(fixed)]
    # The gateway hung up at the cap: it neither read on nor let a copy buffer (the mock would
    # send for 120 s, gigabytes on loopback; what it counts includes the sockets' buffers).
    assert ended[-1]["how"] == "disconnect" and ended[-1]["bytes"] < STREAM_CAP + (16 << 20), ended
    again = client.chat.completions.with_raw_response.create(model="gpt-test", messages=asked, max_tokens=50)
    assert again.headers["x-flaregate-cache"] == "MISS"  # the cut stream was not cached
    assert again.parse().choices[0].message.content == FIXED_TEXT


@pytest.mark.parametrize("model", ["gpt-guarded", "gpt-logged"])
def test_a_guarded_or_logged_stream_keeps_the_relay(fixed, client, model):
    """An answer guardrail reads every event before it goes out, the request log keeps the
    answer: the relay, which never lets a partial event out."""
    asked = messages()
    expected = upstream_bytes(fixed, asked, model)
    half = expected[: len(expected) // 2]
    break_midway(fixed)
    _, received = raw_stream(client, model, asked, f"req_relay_{uuid.uuid4().hex[:8]}")
    got = events(received)
    assert received.startswith(whole_events(half)) and not received.startswith(half)
    assert len(got) == len(events(whole_events(half))) + 2  # the whole events, the error, [DONE]
    assert "error" in data_of(got[-2]) and not any("error" in data_of(e) for e in got[:-2])


def test_a_translated_stream_keeps_the_relay(fixed, client):
    """An Anthropic-kind provider's events are rewritten into OpenAI chunks: never passed
    through; on a break only whole translated events, then the error."""
    whole = list(client.chat.completions.create(model="claude-test", messages=messages(), stream=True, max_tokens=50))
    assert whole and all(c.object == "chat.completion.chunk" for c in whole)
    break_midway(fixed, "/v1/messages")
    _, received = raw_stream(client, "claude-test", messages(), f"req_claude_{uuid.uuid4().hex[:8]}")
    got = events(received)
    assert got[-1] == b"data: [DONE]" and "error" in data_of(got[-2])
    assert not any(b"message_start" in e or b"content_block" in e for e in got)  # OpenAI-shaped, not Anthropic's
    assert not any("error" in data_of(e) for e in got[:-2])  # no partial event carried the error


def test_a_client_that_stops_reading_holds_the_upstream_back(server, fixed, client):
    """A client that reads a little of a never-ending stream and then nothing: the gateway
    reads the upstream no further than the client takes (the copy waits for the client's
    branch, which would otherwise buffer the stream), so the stream never reaches the cap
    before the client leaves."""
    fixed.add_faults([{"kind": "endless_stream", "path": CHAT}])
    request_id = f"req_slow_{uuid.uuid4().hex[:8]}"
    with client.chat.completions.with_streaming_response.create(
            model="gpt-test", messages=messages(), stream=True, extra_headers={"x-request-id": request_id}) as response:
        chunks = response.iter_bytes()  # held, not closed: the connection stays open, unread
        taken = 0
        while taken < 256 * 1024:
            taken += len(next(chunks))
        time.sleep(8)  # unread, the stream would pass the cap in a second or two
    assert hostile_end(fixed)["how"] == "disconnect"
    assert record(server, request_id)["stream_outcome"] == "aborted"  # the client left first: no cut
