"""Tests of the mock upstream itself, driven through the real CLI subprocess and real SDKs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from .mock_upstream import READY_PREFIX, MockUpstreamProcess, speech_audio

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mock():
    with MockUpstreamProcess() as m:
        yield m


@pytest.fixture(autouse=True)
def _clean(mock):
    mock.reset()


@pytest.fixture
def http(mock):
    with httpx.Client(base_url=mock.base_url, timeout=5) as c:
        yield c


def oai(mock) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock.base_url + "/v1", api_key="x", max_retries=0)


def claude(mock) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mock.base_url, api_key="x", max_retries=0)


def sse_data(text: str) -> list[str]:
    """The data payloads of an SSE body, checking each event ends with a blank line."""
    assert text.endswith("\n\n")
    return [e.removeprefix("data: ") for e in text.strip("\n").split("\n\n")]


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}


# -------------------- OpenAI shape


def test_chat_non_stream(mock):
    r = oai(mock).chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}],
            },
        ],
    )
    assert (
        r.id.startswith("chatcmpl-mock-")
        and r.object == "chat.completion"
        and r.model == "gpt-4o-mini"
    )
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "echo: hello world"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (4, 3, 7)


def test_chat_stream(mock, http):
    msgs = [{"role": "user", "content": "one  two three"}]
    chunks = list(
        oai(mock).chat.completions.create(
            model="m1", messages=msgs, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one  two three"  # exact, whitespace included
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4

    raw = http.post("/v1/chat/completions", json={"model": "m1", "messages": msgs, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    data = sse_data(raw.text)
    assert data[-1] == "[DONE]" and len(data) == 1 + 4 + 1 + 1  # role, 4 words, stop, DONE
    assert all(json.loads(d).get("usage") is None for d in data[:-1])


def test_fixed_mode(http):
    hdr = {"x-mock-fixed": "1"}
    r = http.post("/v1/chat/completions", json=CHAT, headers=hdr)
    assert 500 <= len(r.content) <= 700 and r.json()["usage"]["total_tokens"] > 0
    s = http.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=hdr)
    data = sse_data(s.text)
    content = [json.loads(d)["choices"][0]["delta"].get("content") for d in data[:-1]]
    assert len([c for c in content if c]) == 20
    assert "".join(c for c in content if c) == r.json()["choices"][0]["message"]["content"]


def test_fixed_flag_serves_every_chat_the_fixed_reply():
    with MockUpstreamProcess(extra_args=["--fixed"]) as fixed:
        r = httpx.post(fixed.url("/v1/chat/completions"), json=CHAT, timeout=5)
        echo = httpx.post(fixed.url("/v1/chat/completions"), json={**CHAT, "model": "other"}, timeout=5)
    assert r.json()["id"] == "chatcmpl-mock-fixed" and 500 <= len(r.content) <= 700
    assert echo.json()["choices"] == r.json()["choices"]  # not an echo of the prompt


def test_embeddings_and_models(mock, http):
    client = oai(mock)
    a = client.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta"]
    )  # base64 on the wire
    b = http.post("/v1/embeddings", json={"model": "e", "input": "alpha"}).json()  # floats
    assert [len(d.embedding) for d in a.data] == [8, 8]
    assert a.data[0].embedding == b["data"][0]["embedding"] != a.data[1].embedding
    assert {m.id for m in client.models.list()} >= {"gpt-4o-mini", "claude-3-5-sonnet-latest"}


def test_moderations_images_speech_and_transcriptions(mock):
    client = oai(mock)
    assert [r.flagged for r in client.moderations.create(model="m", input=["hi", "kill"]).results] == [False, True]
    assert client.images.generate(model="m", prompt="p", response_format="b64_json").data[0].b64_json
    assert client.audio.speech.create(model="m", voice="alloy", input="hi").content == b"".join(
        speech_audio("hi", "alloy"))
    text = client.audio.transcriptions.create(model="m", file=("a.wav", b"RIFF" * 10), language="en").text
    assert text.startswith("mock transcript of a.wav: 40 bytes, sha256 ")
    form = mock.stats()["requests"][-1]["body"]
    assert form["_order"] == ["model", "language", "file"]
    assert form["file"]["size"] == 40 and form["language"] == "en"


def test_invalid_json_is_provider_shaped(http):
    r = http.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = http.post("/v1/messages", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "request body is not valid JSON"},
    }


# -------------------- Anthropic shape

TOOLS = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}]


def test_anthropic_non_stream_and_tool_use(mock):
    c = claude(mock)
    m = c.messages.create(
        model="claude-x",
        max_tokens=50,
        system="sys prompt",
        messages=[{"role": "user", "content": "hello claude"}],
    )
    assert m.type == "message" and m.model == "claude-x" and m.stop_reason == "end_turn"
    assert m.content[0].type == "text" and m.content[0].text == "echo: hello claude"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (4, 3)

    t = c.messages.create(
        model="claude-x",
        max_tokens=50,
        tools=TOOLS,
        messages=[{"role": "user", "content": "What is the weather?"}],
    )
    assert t.stop_reason == "tool_use"
    assert (t.content[0].type, t.content[0].name, t.content[0].input) == (
        "tool_use",
        "get_weather",
        {"city": "Paris"},
    )
    # the tool result round-trip ends the loop with text
    done = c.messages.create(
        model="claude-x",
        max_tokens=50,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "What is the weather?"},
            {"role": "assistant", "content": [b.model_dump() for b in t.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": t.content[0].id, "content": "sunny"}
                ],
            },
        ],
    )
    assert done.stop_reason == "end_turn" and done.content[0].text == "echo: sunny"


def test_anthropic_stream(mock, http):
    c = claude(mock)
    with c.messages.stream(
        model="claude-x", max_tokens=50, messages=[{"role": "user", "content": "a b c"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert (
        text == "echo: a b c" and final.stop_reason == "end_turn" and final.usage.output_tokens == 4
    )

    with c.messages.stream(
        model="claude-x",
        max_tokens=50,
        tools=TOOLS,
        messages=[{"role": "user", "content": "weather please"}],
    ) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].input == {"city": "Paris"}

    raw = http.post(
        "/v1/messages",
        json={
            "model": "c",
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
    ).text
    events = [e.split("\n")[0].removeprefix("event: ") for e in raw.strip("\n").split("\n\n")]
    assert events == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


# -------------------- counters


def test_workers_ai_rest(http):
    path = "/client/v4/accounts/acct/ai/run/@cf/meta/llama-3.1-8b-instruct"
    r = http.post(path, json={"messages": [{"role": "user", "content": "hi cf"}]})
    assert r.status_code == 200 and r.json()["success"] is True
    assert r.json()["result"]["response"] == "echo: hi cf" and r.json()["result"]["usage"]["total_tokens"] > 0
    r = http.post(path, json={"messages": [{"role": "user", "content": "a b"}], "stream": True})
    data = sse_data(r.text)
    assert data[-1] == "[DONE]" and "usage" in json.loads(data[-2])
    assert "".join(json.loads(d)["response"] for d in data[:-1]) == "echo: a b"
    assert http.post(path, json={"messages": []}).json()["success"] is False


def test_counters(mock, http):
    http.post("/v1/chat/completions", json=CHAT, headers={"X-Custom": "Yes"})
    http.post("/v1/chat/completions", content=b"junk")
    http.get("/v1/models")
    http.get("/nope")
    http.get("/_mock/stats")
    st = mock.stats()
    assert (
        st["calls"] == {"/v1/chat/completions": 2, "/v1/models": 1, "/nope": 1} and st["total"] == 4
    )
    first = st["requests"][0]
    assert (
        first["path"] == "/v1/chat/completions"
        and first["body"] == CHAT
        and first["headers"]["x-custom"] == "Yes"
    )
    assert st["requests"][1]["body"] is None
    for _ in range(55):
        http.get("/v1/models")
    assert len(mock.stats()["requests"]) == 50
    mock.reset()
    assert mock.stats()["total"] == 0


# -------------------- faults


def test_fault_status_with_headers_and_times(mock, http):
    mock.add_faults(
        [
            {"kind": "status", "status": 429, "headers": {"retry-after": "2"}, "times": 2},
            {"kind": "status", "status": 529, "path": "/v1/messages"},
        ]
    )
    for _ in range(2):
        r = http.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 429 and r.headers["retry-after"] == "2" and "error" in r.json()
    assert (
        http.post("/v1/chat/completions", json=CHAT).status_code == 200
    )  # path filter skipped the 529
    r = http.post("/v1/messages", json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"
    assert mock.stats()["faults_pending"] == 0


def test_fault_forever_until_reset(mock, http):
    mock.add_faults([{"kind": "status", "status": 503, "times": -1}])
    assert [http.get("/v1/models").status_code for _ in range(4)] == [503] * 4
    mock.reset()
    assert http.get("/v1/models").status_code == 200


def test_fault_delay(mock, http):
    mock.add_faults([{"kind": "delay", "seconds": 1.0}, {"kind": "delay", "seconds": 0.3}])
    with pytest.raises(httpx.TimeoutException):
        http.post("/v1/chat/completions", json=CHAT, timeout=0.3)
    t = time.monotonic()
    assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert time.monotonic() - t >= 0.25


def test_fault_slow_first_byte(mock, http):
    mock.add_faults([{"kind": "slow_first_byte", "seconds": 0.6}])
    t = time.monotonic()
    with http.stream("POST", "/v1/chat/completions", json=CHAT) as r:
        assert r.status_code == 200 and time.monotonic() - t < 0.5  # headers came first
        assert json.loads(r.read())["choices"][0]["message"]["content"] == "echo: hi there"
    assert time.monotonic() - t >= 0.55


def test_fault_malformed_json(mock, http):
    mock.add_faults([{"kind": "malformed_json"}])
    r = http.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        r.json()


def test_fault_stream_stall(mock, http):
    mock.add_faults([{"kind": "stream_stall", "after_chunks": 2, "seconds": 0.6}])
    assert (
        http.post("/v1/chat/completions", json=CHAT).status_code == 200
    )  # non-stream: not matched
    t = time.monotonic()
    r = http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert sse_data(r.text)[-1] == "[DONE]" and time.monotonic() - t >= 0.55


def test_bad_fault_spec_rejected(http):
    for bad in (
        [{"kind": "explode"}],
        [{"kind": "delay", "seconds": "x"}],
        [{"kind": "reset", "times": 0}],
    ):
        assert http.post("/_mock/faults", json=bad).status_code == 400
    assert http.post("/_mock/faults", json={"kind": "reset", "times": 2}).json()["queued"] == 1
    assert http.get("/_mock/faults").json()["faults"][0]["times"] == 2


# Connection-level faults: check both uvicorn stacks (httptools+uvloop by default, h11+asyncio).
@pytest.fixture(scope="module", params=["auto", "h11"])
def wire(request, mock):
    if request.param == "auto":
        yield mock
        return
    with MockUpstreamProcess(extra_args=["--loop", "asyncio", "--http", "h11"]) as m:
        yield m


def test_fault_reset(wire):
    wire.reset()
    wire.add_faults([{"kind": "reset"}])
    with httpx.Client(base_url=wire.base_url) as c:
        with pytest.raises(httpx.TransportError):  # no status line at all, not a 500
            c.post("/v1/chat/completions", json=CHAT)
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_fault_reset_mid_body(wire):
    wire.reset()
    wire.add_faults([{"kind": "reset_mid_body"}])
    with (
        httpx.Client(base_url=wire.base_url) as c,
        c.stream("POST", "/v1/chat/completions", json=CHAT) as r,
    ):
        assert r.status_code == 200
        with pytest.raises(httpx.TransportError):
            r.read()


def test_fault_stream_cut(wire):
    wire.reset()
    wire.add_faults([{"kind": "stream_cut", "after_chunks": 2}])
    lines: list[str] = []
    with httpx.Client(base_url=wire.base_url) as c:
        try:
            with c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
                lines.extend(x for x in r.iter_lines() if x)
        except httpx.TransportError:
            pass
    assert 1 <= len(lines) <= 2 and "data: [DONE]" not in lines
    assert wire.stats()["faults_pending"] == 0


# -------------------- CLI


def test_cli_as_module():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.mock_upstream", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith(READY_PREFIX + " http://127.0.0.1:")
        assert httpx.get(line.split()[1] + "/v1/models").status_code == 200
    finally:
        proc.terminate()
        proc.wait(5)
    assert proc.stdout.read() == ""  # exactly one stdout line


def test_openai_tool_calls_stream_and_not(mock):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    asked = [{"role": "user", "content": "weather in Paris?"}]
    r = oai(mock).chat.completions.create(model="gpt-4o-mini", messages=asked, tools=tools)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {"city": "Paris"}
    chunks = list(oai(mock).chat.completions.create(model="gpt-4o-mini", messages=asked, tools=tools, stream=True))
    args = "".join(c.choices[0].delta.tool_calls[0].function.arguments or "" for c in chunks
                   if c.choices and c.choices[0].delta.tool_calls)
    assert json.loads(args) == {"city": "Paris"}
    answered = asked + [r.choices[0].message.model_dump(exclude_none=True),
                        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    final = oai(mock).chat.completions.create(model="gpt-4o-mini", messages=answered, tools=tools)
    assert final.choices[0].message.content == "echo: sunny"
