"""Provider adapters through the real server against the real mock upstream.

Anthropic: OpenAI chat translated both ways (the openai SDK as client, tools and streaming
deltas round-tripped) and native ``/v1/messages`` (the anthropic SDK as client, with the
fault matrix). Also embeddings with failover, Workers AI over REST, the Hugging Face
router and the built-in mock's programmable faults.
"""

import json
import time

import anthropic
import httpx
import openai
import pytest

from tests.support.mock_upstream import MockUpstreamProcess

from .conftest import FAILOVER_DEADLINE, FAST_FAILOVER, GATEWAY_KEY, free_port, run_gateway

DEADLINE = FAILOVER_DEADLINE
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


@pytest.fixture(scope="module")
def mocks():
    with MockUpstreamProcess() as primary, MockUpstreamProcess() as backup:
        yield primary, backup


@pytest.fixture(scope="module")
def server(mocks, tmp_path_factory):
    primary, backup = mocks
    providers = [
        {"name": "claude", "kind": "anthropic", "base_url": primary.base_url + "/v1", "api_key_env": "CLAUDE_API_KEY"},
        {"name": "claude-backup", "kind": "anthropic", "base_url": backup.base_url + "/v1"},
        {"name": "claude-dead", "kind": "anthropic", "base_url": f"http://127.0.0.1:{free_port()}/v1"},
        {"name": "oai", "base_url": primary.base_url + "/v1"},
        {"name": "oai-backup", "base_url": backup.base_url + "/v1"},
        {"name": "cf", "kind": "workers_ai", "base_url": primary.base_url + "/client/v4", "account_id": "acct123",
         "api_key_env": "CF_API_KEY"},
        {"name": "hf", "kind": "huggingface", "base_url": primary.base_url + "/v1"},
        {"name": "builtin", "kind": "mock"},
        {"name": "broken", "kind": "mock", "fault": "503"},
    ]
    routes = {
        "claude-chat": ["claude/claude-3-5-sonnet-latest"],
        "claude-x": ["claude", "claude-backup"],
        "claude-dead-x": ["claude-dead", "claude-backup"],
        "embed": ["oai/text-embedding-3-small", "oai-backup/text-embedding-3-small"],
        "embed-mixed": ["claude", "builtin"],
        "llama": ["cf/@cf/meta/llama-3.1-8b-instruct"],
        "hf-chat": ["hf/meta-llama/Llama-3.1-8B-Instruct"],
        "resilient": ["broken", "builtin"],
        "mock-fault": ["builtin/fail-429"],
        "gpt-for-claude-clients": ["oai/gpt-4o-mini"],
        "claude-then-gpt": ["claude", "oai/gpt-4o-mini"],
        "*": ["cf"],  # a wildcard route: the client's model name reaches Workers AI
    }
    env = {
        "FLAREGATE_API_KEYS": GATEWAY_KEY,
        "CLAUDE_API_KEY": "sk-ant-upstream",
        "CF_API_KEY": "cf-token",
        "FLAREGATE_PROVIDERS": json.dumps(providers),
        "FLAREGATE_ROUTES": json.dumps(routes),
        **FAST_FAILOVER,
    }
    with run_gateway(tmp_path_factory.mktemp("providers"), env) as gw:
        yield gw


@pytest.fixture(autouse=True)
def clean(mocks):
    for mock in mocks:
        mock.reset()


@pytest.fixture
def oai(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20)


@pytest.fixture
def claude(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key=GATEWAY_KEY, max_retries=0, timeout=20)


# -- OpenAI chat <-> Anthropic Messages ----------------------------------------------------------
def test_openai_chat_through_anthropic_round_trips_tool_calls(oai, mocks):
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What's the weather in Paris?"}]
    first = oai.chat.completions.create(model="claude-chat", messages=messages, tools=TOOLS, max_tokens=200)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    sent = mocks[0].stats()["requests"][-1]
    assert sent["path"] == "/v1/messages" and sent["headers"]["x-api-key"] == "sk-ant-upstream"
    assert sent["body"]["system"] == "You are terse." and sent["body"]["max_tokens"] == 200
    assert sent["body"]["tools"][0]["input_schema"]["required"] == ["city"]
    assert sent["body"]["model"] == "claude-3-5-sonnet-latest"
    # The tool's result goes back as Anthropic tool_result; the answer comes back as text.
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    second = oai.chat.completions.create(model="claude-chat", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "echo: sunny, 21 C"
    assert second.choices[0].finish_reason == "stop"
    blocks = mocks[0].stats()["requests"][-1]["body"]["messages"]
    assert blocks[1]["content"][0] == {"type": "tool_use", "id": call.id, "name": "get_weather",
                                       "input": {"city": "Paris"}}
    assert blocks[2]["content"][0] == {"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}
    assert second.usage.prompt_tokens > 0 and second.usage.completion_tokens > 0


def test_openai_streaming_through_anthropic_delivers_text_and_tool_deltas(oai):
    stream = oai.chat.completions.create(model="claude-chat", stream=True, stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "stream these five words now"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream these five words now"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3  # real deltas, not one blob
    assert chunks[-1].usage.completion_tokens > 0
    tool_stream = oai.chat.completions.create(model="claude-chat", stream=True, tools=TOOLS,
                                              messages=[{"role": "user", "content": "weather in Paris?"}])
    calls = [c.choices[0].delta.tool_calls[0] for c in tool_stream if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0].function.name == "get_weather" and calls[0].id.startswith("toolu_")
    assert len(calls) >= 3  # the start, then the argument pieces
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == {"city": "Paris"}


# -- native /v1/messages with the anthropic SDK -------------------------------------------------
def test_messages_passthrough_non_streaming_and_streaming(claude, mocks):
    message = claude.messages.create(model="claude-x", max_tokens=50,
                                     messages=[{"role": "user", "content": "hello claude"}])
    assert message.content[0].text == "echo: hello claude" and message.stop_reason == "end_turn"
    sent = mocks[0].stats()["requests"][-1]
    assert sent["path"] == "/v1/messages" and sent["body"]["model"] == "claude-x"
    assert GATEWAY_KEY not in json.dumps(sent)
    with claude.messages.stream(model="claude-x", max_tokens=50,
                                messages=[{"role": "user", "content": "stream me please"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream me please" and final.stop_reason == "end_turn"


def test_messages_tool_use_streams_input_json(claude):
    tools = [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}]
    with claude.messages.stream(model="claude-x", max_tokens=50, tools=tools,
                                messages=[{"role": "user", "content": "weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].input == {"city": "Paris"}


ANTHROPIC_MATRIX = [
    ("500", {"kind": "status", "status": 500}, anthropic.InternalServerError, 502),
    ("529", {"kind": "status", "status": 529}, anthropic.InternalServerError, 502),
    ("429", {"kind": "status", "status": 429, "headers": {"retry-after-ms": "100"}}, anthropic.ServiceUnavailableError, 503),
    ("timeout", {"kind": "delay", "seconds": 2}, anthropic.GatewayTimeoutError, 504),
    ("slow_first_byte", {"kind": "slow_first_byte", "seconds": 2}, anthropic.GatewayTimeoutError, 504),
    ("reset", {"kind": "reset"}, anthropic.InternalServerError, 502),
    ("malformed_json", {"kind": "malformed_json"}, anthropic.InternalServerError, 502),
    ("stream_cut", {"kind": "stream_cut", "after_chunks": 0}, anthropic.InternalServerError, 502),
    ("stream_stall", {"kind": "stream_stall", "after_chunks": 0, "seconds": 5}, anthropic.GatewayTimeoutError, 504),
]


def _messages_call(client, model, stream, headers=None):
    kwargs = {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi there"}],
              "extra_headers": headers or {}}
    if not stream:
        return client.messages.create(**kwargs).content[0].text
    with client.messages.stream(**kwargs) as s:
        return "".join(s.text_stream)


@pytest.mark.parametrize(("case", "spec", "error", "status", "stream"), [
    pytest.param(*row, stream, id=f"{row[0]}-{'sse' if stream else 'json'}")
    for row in ANTHROPIC_MATRIX for stream in (False, True)
    if stream or not row[0].startswith("stream_")  # stream faults only touch streams
])
def test_messages_fault_matrix_with_and_without_fallback(claude, mocks, case, spec, error, status, stream):
    fault = {**spec, "path": "/v1/messages"}
    # With a healthy fallback: the client never notices.
    mocks[0].add_faults([{**fault, "times": 1}])
    assert _messages_call(claude, "claude-x", stream) == "echo: hi there"
    assert mocks[1].stats()["calls"].get("/v1/messages") == 1
    # Without one (pinned to the faulty provider): the matching exception, within the deadline.
    mocks[0].reset()
    mocks[0].add_faults([{**fault, "times": 2}])
    started = time.monotonic()
    with pytest.raises(error) as info:
        _messages_call(claude, "claude-x", stream, {"x-flaregate-provider": "claude"})
    assert time.monotonic() - started < DEADLINE + 2
    assert info.value.status_code == status
    assert info.value.body["type"] == "error" and info.value.body["error"]["message"]


def test_messages_connection_refused_fails_over_and_errors_honestly(claude):
    assert _messages_call(claude, "claude-dead-x", False) == "echo: hi there"
    with pytest.raises(anthropic.InternalServerError) as info:
        _messages_call(claude, "claude-dead-x", True, {"x-flaregate-provider": "claude-dead"})
    assert info.value.status_code == 502


def test_messages_stream_cut_after_it_began_ends_with_an_error_event(claude, mocks):
    mocks[0].add_faults([{"kind": "stream_cut", "after_chunks": 3, "path": "/v1/messages"}])
    with pytest.raises(anthropic.APIStatusError, match="interrupted|ended before completion"):
        _messages_call(claude, "claude-x", True)
    assert mocks[1].stats()["total"] == 0


def test_messages_bad_input_is_an_anthropic_error(server):
    response = httpx.post(server.base_url + "/v1/messages", headers={"x-api-key": GATEWAY_KEY},
                          json={"model": "claude-x", "messages": []})
    assert response.status_code == 400 and response.json()["type"] == "error"
    response = httpx.post(server.base_url + "/v1/messages", headers={"x-api-key": "wrong"},
                          json={"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    response = httpx.post(server.base_url + "/v1/messages", headers={"x-api-key": GATEWAY_KEY},
                          json={"model": "claude-x", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


# -- Messages clients on any chat provider (Anthropic -> OpenAI -> Anthropic) -------------------
def test_messages_clients_reach_openai_providers_with_tools_round_tripped(claude, mocks):
    tools = [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}]
    asked = [{"role": "user", "content": "weather in Paris?"}]
    first = claude.messages.create(model="gpt-for-claude-clients", max_tokens=50, system="Be brief.",
                                   tools=tools, messages=asked)
    assert first.stop_reason == "tool_use"
    tool_use = first.content[0]
    assert tool_use.type == "tool_use" and tool_use.name == "get_weather" and tool_use.input == {"city": "Paris"}
    sent = mocks[0].stats()["requests"][-1]
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["model"] == "gpt-4o-mini"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["body"]["tools"][0]["function"]["name"] == "get_weather"
    answered = asked + [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id,
                                                      "content": "sunny"}]}]
    final = claude.messages.create(model="gpt-for-claude-clients", max_tokens=50, tools=tools, messages=answered)
    assert final.content[0].text == "echo: sunny" and final.stop_reason == "end_turn"
    assert mocks[0].stats()["requests"][-1]["body"]["messages"][-1] == {
        "role": "tool", "tool_call_id": tool_use.id, "content": "sunny"}
    with claude.messages.stream(model="gpt-for-claude-clients", max_tokens=50, tools=tools, messages=asked) as s:
        streamed = s.get_final_message()
    assert streamed.stop_reason == "tool_use" and streamed.content[0].input == {"city": "Paris"}
    with claude.messages.stream(model="gpt-for-claude-clients", max_tokens=50,
                                messages=[{"role": "user", "content": "five little words here"}]) as s:
        pieces = list(s.text_stream)
        done = s.get_final_message()
    assert "".join(pieces) == "echo: five little words here" and len(pieces) > 3
    assert done.usage.output_tokens > 0


def test_messages_fail_over_from_anthropic_to_an_openai_provider(claude, mocks):
    mocks[0].add_faults([{"kind": "status", "status": 529, "path": "/v1/messages"}])
    raw = claude.messages.with_raw_response.create(model="claude-then-gpt", max_tokens=20,
                                                   messages=[{"role": "user", "content": "still here?"}])
    assert raw.headers["x-flaregate-provider"] == "oai" and raw.headers["x-flaregate-attempts"] == "2"
    assert raw.parse().content[0].text == "echo: still here?"


# -- embeddings ---------------------------------------------------------------------------------
def test_embeddings_route_with_failover(oai, mocks):
    result = oai.embeddings.create(model="embed", input=["alpha", "beta"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8
    mocks[0].add_faults([{"kind": "status", "status": 503, "path": "/v1/embeddings"}])
    raw = oai.embeddings.with_raw_response.create(model="embed", input="gamma")
    assert raw.headers["x-flaregate-provider"] == "oai-backup" and raw.headers["x-flaregate-attempts"] == "2"
    assert len(raw.parse().data) == 1
    # Targets whose provider has no embeddings (anthropic) are skipped.
    raw = oai.embeddings.with_raw_response.create(model="embed-mixed", input="delta")
    assert raw.headers["x-flaregate-provider"] == "builtin"


def test_embeddings_bad_input_and_unsupported_route(oai):
    with pytest.raises(openai.BadRequestError) as info:
        oai.embeddings.create(model="embed", input=[])
    assert info.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as info:
        oai.embeddings.create(model="claude-chat", input="x")
    assert info.value.body["code"] == "unsupported_operation"


# -- Workers AI, Hugging Face, the built-in mock ------------------------------------------------
def test_workers_ai_over_rest(oai, mocks):
    raw = oai.chat.completions.with_raw_response.create(model="llama", messages=[{"role": "user", "content": "hi cf"}])
    assert raw.parse().choices[0].message.content == "echo: hi cf" and raw.parse().usage.total_tokens > 0
    sent = mocks[0].stats()["requests"][-1]
    assert sent["path"] == "/client/v4/accounts/acct123/ai/run/@cf/meta/llama-3.1-8b-instruct"
    assert sent["headers"]["authorization"] == "Bearer cf-token"
    stream = oai.chat.completions.create(model="llama", stream=True, messages=[{"role": "user", "content": "a b c"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: a b c"


@pytest.mark.parametrize("model", ["../../../../zones?x=", "@cf/../../../user/tokens", "@cf/x%2F..%2F..%2Fzones"])
def test_workers_ai_model_names_cannot_walk_the_cloudflare_api(oai, mocks, model):
    """A tenant's model on a wildcard route stays a model: a 400, and no call leaves with the token."""
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "invalid_model"
    assert all(not r["path"].startswith("/client/v4") for r in mocks[0].stats()["requests"])
    # The wildcard still serves real model names.
    answer = oai.chat.completions.create(model="@cf/meta/llama-3.1-8b-instruct",
                                         messages=[{"role": "user", "content": "hi cf"}])
    assert answer.choices[0].message.content == "echo: hi cf"


def test_huggingface_router_is_openai_compatible(oai, mocks):
    completion = oai.chat.completions.create(model="hf-chat", messages=[{"role": "user", "content": "hi hf"}])
    assert completion.choices[0].message.content == "echo: hi hf"
    assert mocks[0].stats()["requests"][-1]["body"]["model"] == "meta-llama/Llama-3.1-8B-Instruct"


def test_builtin_mock_faults_drive_failover_without_a_network(oai, server):
    raw = oai.chat.completions.with_raw_response.create(model="resilient", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-flaregate-provider"] == "builtin" and raw.headers["x-flaregate-attempts"] == "2"
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model="mock-fault", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503 and info.value.body["code"] == "upstream_rate_limited"
    report = httpx.get(server.base_url + "/v1/providers", headers={"authorization": f"Bearer {GATEWAY_KEY}"}).json()
    broken = next(e for e in report["data"] if e["provider"] == "broken")
    assert broken["failures"] >= 1 and broken["recent_errors"][-1]["status"] == 503 and broken["kind"] == "mock"
    assert report["scope"] == "process"
