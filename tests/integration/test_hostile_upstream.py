"""A hostile upstream (hardening item 5): an endless SSE line, a 1 GB body, a never-ending
stream. Through the real server (either host) with the official openai SDK: each gives the
client a clear error, the gateway hangs up on the upstream, keeps answering /health, and a
normal request right after (or alongside) succeeds.

Caps: the defaults for the event (UPSTREAM_MAX_EVENT_BYTES, 4 MiB) and the whole body
(UPSTREAM_MAX_RESPONSE_BYTES, 16 MiB); the stream's total is lowered to 8 MiB so the
never-ending stream ends quickly on the edge too.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from tests.support.mock_upstream import MockUpstreamProcess

from .conftest import GATEWAY_KEY, run_gateway

STREAM_CAP = 8 << 20
CLIENT_TIMEOUT = 60  # generous: the bound is the caps, never the client giving up
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def hostile():
    with MockUpstreamProcess() as mock:
        yield mock


@pytest.fixture(scope="module")
def server(hostile, tmp_path_factory):
    providers = [
        {"name": "hostile", "kind": "openai", "base_url": hostile.base_url + "/v1"},
        {"name": "hostile-anthropic", "kind": "anthropic", "base_url": hostile.base_url + "/v1"},
    ]
    routes = {"gpt-hostile": ["hostile"], "claude-hostile": ["hostile-anthropic"]}
    env = {
        "FLAREGATE_API_KEYS": GATEWAY_KEY,
        "FLAREGATE_PROVIDERS": json.dumps(providers),
        "FLAREGATE_ROUTES": json.dumps(routes),
        "RATE_LIMIT_CAPACITY": "10000",
        "RATE_LIMIT_REFILL_PER_SECOND": "1000",
        "CACHE_TTL_SECONDS": "0",
        "UPSTREAM_MAX_ATTEMPTS": "1",  # one attempt each: the faults are the upstream's, not chance
        "CIRCUIT_FAILURE_THRESHOLD": "1000",
        "UPSTREAM_MAX_STREAM_BYTES": str(STREAM_CAP),
    }
    with run_gateway(tmp_path_factory.mktemp("hostile"), env) as gw:
        yield gw


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=GATEWAY_KEY, max_retries=0,
                         timeout=CLIENT_TIMEOUT)


@pytest.fixture(autouse=True)
def clean(hostile):
    hostile.reset()


def inject(mock: MockUpstreamProcess, **spec) -> None:
    httpx.post(mock.base_url + "/_mock/faults", json=spec, timeout=10).raise_for_status()


def hostile_log(mock: MockUpstreamProcess) -> list[dict]:
    return httpx.get(mock.base_url + "/_mock/hostile", timeout=10).json()["hostile"]


def hung_up(mock: MockUpstreamProcess, kind: str) -> dict:
    """The mock's record of the hostile answer, once it saw the gateway hang up."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = [r for r in hostile_log(mock) if r["kind"] == kind]
        if done:
            return done[-1]
        time.sleep(0.1)
    raise AssertionError(f"the {kind} answer never ended: the gateway kept reading it")


def stream_error(client: openai.OpenAI, model: str) -> tuple[openai.APIError, int]:
    """Read a stream until the SDK raises on its error event; (the error, chunks seen)."""
    seen = 0
    with pytest.raises(openai.APIError) as caught:
        for _ in client.chat.completions.create(model=model, messages=HELLO, stream=True):
            seen += 1
    return caught.value, seen


def still_serving(server, client: openai.OpenAI) -> None:
    health = httpx.get(server.base_url + "/health", timeout=10)
    assert health.status_code == 200, health.text
    answer = client.chat.completions.create(model="gpt-hostile", messages=HELLO)
    assert answer.choices[0].message.content == "echo: hello"
    chunks = list(client.chat.completions.create(model="gpt-hostile", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello"


def names(error: openai.APIError, code: str) -> bool:
    """The error says which cap: its code (once the relays pass the cap's own code on) or,
    as the relays say "upstream_stream_interrupted" today, its message."""
    return error.code == code or (error.code == "upstream_stream_interrupted" and code in error.message)


def test_an_endless_line_ends_the_stream_with_event_too_large(hostile, server, client):
    inject(hostile, kind="endless_line")
    error, seen = stream_error(client, "gpt-hostile")
    assert names(error, "upstream_event_too_large"), (error.code, error.message)
    assert "UPSTREAM_MAX_EVENT_BYTES" in error.message
    assert seen == 0  # nothing of the line reached the client, only the error
    record = hung_up(hostile, "endless_line")
    assert record["how"] == "disconnect"
    still_serving(server, client)


def test_an_endless_line_through_a_translated_provider_is_a_502(hostile, server, client):
    """Anthropic's stream is translated as it arrives: the line is refused before the
    client got a byte, so the answer is an honest 502 with the cap's code."""
    inject(hostile, kind="endless_line", path="/v1/messages")
    with pytest.raises(openai.APIStatusError) as caught:
        for _ in client.chat.completions.create(model="claude-hostile", messages=HELLO, stream=True,
                                                max_tokens=16):
            pass
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_event_too_large", caught.value.message
    assert hung_up(hostile, "endless_line")["how"] == "disconnect"
    still_serving(server, client)


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
def test_a_1gb_body_is_a_502_response_too_large(hostile, server, client, length):
    inject(hostile, kind="huge_body", length=length)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-hostile", messages=HELLO)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_response_too_large", caught.value.message
    assert "UPSTREAM_MAX_RESPONSE_BYTES" in caught.value.message
    record = hung_up(hostile, "huge_body")
    assert record["how"] == "disconnect" and record["bytes"] < 1 << 30  # never read to its end
    still_serving(server, client)


def test_a_never_ending_stream_ends_with_stream_too_large(hostile, server, client):
    inject(hostile, kind="endless_stream")
    error, seen = stream_error(client, "gpt-hostile")
    assert names(error, "upstream_stream_too_large"), (error.code, error.message)
    assert "UPSTREAM_MAX_STREAM_BYTES" in error.message
    assert seen > 1000  # the stream ran, up to the cap
    record = hung_up(hostile, "endless_stream")
    assert record["how"] == "disconnect"
    still_serving(server, client)


def test_a_never_ending_translated_stream_ends_too(hostile, server, client):
    inject(hostile, kind="endless_stream", path="/v1/messages")
    error, seen = stream_error(client, "claude-hostile")
    assert names(error, "upstream_stream_too_large"), (error.code, error.message)
    assert seen > 1000
    assert hung_up(hostile, "endless_stream")["how"] == "disconnect"


def test_other_requests_are_unaffected_while_a_hostile_stream_runs(hostile, server, client):
    """A never-ending stream held open (its client reads one chunk, then waits) while other
    requests come and go; then it is read on to its error."""
    inject(hostile, kind="endless_stream")
    started, proceed = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def hostile_client() -> None:
        try:
            with pytest.raises(openai.APIError) as caught:
                for _ in client.chat.completions.create(model="gpt-hostile", messages=HELLO, stream=True):
                    if not started.is_set():
                        started.set()
                        proceed.wait(CLIENT_TIMEOUT)
            outcome["error"] = caught.value
        except BaseException as exc:  # reported below, not lost in the thread
            outcome["failure"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=hostile_client)
    thread.start()
    try:
        assert started.wait(CLIENT_TIMEOUT)
        assert not hostile_log(hostile)  # the hostile answer is still being sent
        for _ in range(3):
            still_serving(server, client)
    finally:
        proceed.set()
        thread.join(CLIENT_TIMEOUT)
    assert isinstance(outcome.get("error"), openai.APIError), outcome
    assert names(outcome["error"], "upstream_stream_too_large")  # type: ignore[arg-type]
