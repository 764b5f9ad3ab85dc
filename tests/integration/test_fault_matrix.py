"""The fault matrix through the real server, with the official openai SDK as the client.

Two real mock upstreams: "flaky" (faults injected) and "backup". The wildcard route tries
flaky, then backup, so every request with a fresh model name starts from fresh health.
Pinning flaky with ``x-flaregate-provider`` takes the healthy fallback away.
"""

import json
import time
import uuid

import httpx
import openai
import pytest

from tests.support.mock_upstream import MockUpstreamProcess

from .conftest import FAILOVER_DEADLINE, FAST_FAILOVER, GATEWAY_KEY, free_port, run_gateway

DEADLINE = FAILOVER_DEADLINE
PIN_FLAKY = {"x-flaregate-provider": "flaky"}

# (case, fault spec, statuses clients get with no fallback, error code)
MATRIX = [
    ("500", {"kind": "status", "status": 500}, 502, "upstream_error"),
    ("502", {"kind": "status", "status": 502}, 502, "upstream_error"),
    ("503", {"kind": "status", "status": 503}, 502, "upstream_error"),
    ("429", {"kind": "status", "status": 429, "headers": {"retry-after-ms": "100"}}, 503, "upstream_rate_limited"),
    ("refused", None, 502, "upstream_unreachable"),
    ("timeout", {"kind": "delay", "seconds": 2}, 504, "upstream_timeout"),
    ("slow_first_byte", {"kind": "slow_first_byte", "seconds": 2}, 504, "upstream_timeout"),
    ("reset", {"kind": "reset"}, 502, "upstream_unreachable"),
    ("reset_mid_body", {"kind": "reset_mid_body"}, 502, "upstream_error"),
    ("malformed_json", {"kind": "malformed_json"}, 502, None),
]
# Stream-only faults before the first event (after_chunks 0) fail over transparently.
STREAM_MATRIX = [
    ("stream_cut", {"kind": "stream_cut", "after_chunks": 0}, 502, "upstream_error"),
    ("stream_stall", {"kind": "stream_stall", "after_chunks": 0, "seconds": 5}, 504, "upstream_timeout"),
]


@pytest.fixture(scope="module")
def mocks():
    with MockUpstreamProcess() as flaky, MockUpstreamProcess() as backup:
        yield flaky, backup


@pytest.fixture(scope="module")
def server(mocks, tmp_path_factory):
    flaky, backup = mocks
    providers = [
        {"name": "flaky", "base_url": flaky.base_url + "/v1"},
        {"name": "backup", "base_url": backup.base_url + "/v1"},
        {"name": "dead", "base_url": f"http://127.0.0.1:{free_port()}/v1"},
    ]
    routes = {"*": ["flaky", "backup"], "refused": ["dead", "backup"]}
    env = {
        "FLAREGATE_API_KEYS": GATEWAY_KEY,
        "FLAREGATE_PROVIDERS": json.dumps(providers),
        "FLAREGATE_ROUTES": json.dumps(routes),
        **FAST_FAILOVER,
    }
    with run_gateway(tmp_path_factory.mktemp("faults"), env) as gw:
        yield gw


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20)


@pytest.fixture(autouse=True)
def clean(mocks):
    for mock in mocks:
        mock.reset()


def model_for(case: str) -> str:
    return f"m-{case}-{uuid.uuid4().hex[:8]}"  # fresh health for each request


def arrange(case, spec, mocks, times):
    """Inject the fault on flaky (``refused`` uses the dead provider's route instead)."""
    if spec is None:
        return "refused", {}
    mocks[0].add_faults([{**spec, "path": "/v1/chat/completions", "times": times}])
    return model_for(case), {}


def text_of(stream):
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def _cases(matrix, streams_only=False):
    """(case, spec, status, code, stream) rows. A stream reset mid-body breaks after its first
    event, so it belongs to the mid-stream test below; stream faults only touch streams."""
    streams = (True,) if streams_only else (False, True)
    return [pytest.param(*row, stream, id=f"{row[0]}-{'sse' if stream else 'json'}")
            for row in matrix for stream in streams if not (stream and row[0] == "reset_mid_body")]


@pytest.mark.parametrize(("case", "spec", "status", "code", "stream"), _cases(MATRIX))
def test_with_a_healthy_fallback_every_request_succeeds(client, mocks, case, spec, status, code, stream):
    model, _ = arrange(case, spec, mocks, times=1)
    content = f"fault {case}"
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], stream=stream)
    assert raw.headers["x-flaregate-provider"] == "backup"
    assert raw.headers["x-flaregate-attempts"] == "2"
    parsed = raw.parse()
    answer = text_of(parsed) if stream else parsed.choices[0].message.content
    assert answer == f"echo: {content}"


@pytest.mark.parametrize(("case", "spec", "status", "code"), STREAM_MATRIX, ids=[m[0] for m in STREAM_MATRIX])
def test_stream_faults_before_the_first_event_fail_over(client, mocks, case, spec, status, code):
    mocks[0].add_faults([{**spec, "path": "/v1/chat/completions"}])
    raw = client.chat.completions.with_raw_response.create(
        model=model_for(case), messages=[{"role": "user", "content": "before first byte"}], stream=True)
    assert raw.headers["x-flaregate-provider"] == "backup"
    assert text_of(raw.parse()) == "echo: before first byte"


@pytest.mark.parametrize(("case", "spec", "status", "code", "stream"),
                         _cases(MATRIX) + _cases(STREAM_MATRIX, streams_only=True))
def test_with_no_fallback_the_client_gets_an_honest_5xx_within_the_deadline(
        client, mocks, case, spec, status, code, stream):
    if spec is None:
        model, headers = "refused", {"x-flaregate-provider": "dead"}
    else:
        model, headers = arrange(case, spec, mocks, times=2)[0], PIN_FLAKY
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}],
                                       stream=stream, extra_headers=headers)
    assert time.monotonic() - started < DEADLINE + 2  # bounded by the configured deadline
    assert info.value.status_code == status
    error = info.value.body
    assert set(error) >= {"message", "type", "code", "param"} and error["type"] == "api_error"
    if code:
        assert error["code"] == code
    assert info.value.response.headers["x-flaregate-attempts"] == "2"
    if status == 503:
        assert int(info.value.response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("fault", [
    {"kind": "stream_cut", "after_chunks": 3},
    {"kind": "stream_stall", "after_chunks": 3, "seconds": 5},
    {"kind": "reset_mid_body"},
], ids=["cut", "stall", "reset_mid_body"])
def test_a_stream_that_breaks_after_it_began_ends_with_an_error_the_sdk_raises(client, mocks, server, fault):
    mocks[0].add_faults([{**fault, "path": "/v1/chat/completions"}])
    model = model_for("midstream")
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "one two three four five six"}], stream=True)
    received = []
    with pytest.raises(openai.APIError, match="interrupted|ended before completion"):
        for chunk in stream:
            received.append(chunk)
    assert received  # the client had the first bytes: no silent switch to another provider
    assert mocks[1].stats()["total"] == 0
    # The raw stream: an explicit error event, then [DONE]; the provider's health says so.
    report = httpx.get(server.base_url + "/v1/providers", headers={"authorization": f"Bearer {GATEWAY_KEY}"}).json()
    entry = next(e for e in report["data"] if e["model"] == model and e["provider"] == "flaky")
    assert entry["failures"] == 1 and entry["recent_errors"][0]["kind"].startswith("stream_")


def test_raw_midstream_error_event_then_done(server, mocks):
    mocks[0].add_faults([{"kind": "stream_cut", "after_chunks": 2, "path": "/v1/chat/completions"}])
    body = {"model": model_for("raw"), "stream": True, "messages": [{"role": "user", "content": "a b c d e"}]}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as response:
        assert response.status_code == 200
        events = [e for e in "".join(response.iter_text()).split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["error"]["code"] in ("upstream_stream_interrupted", "upstream_stream_truncated")
