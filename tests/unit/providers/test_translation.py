"""OpenAI <-> Anthropic and Workers AI translation, as pure functions."""

import json

from flaregate.providers.anthropic_translate import (
    StreamTranslator,
    to_anthropic_request,
    to_openai_completion,
    to_openai_error,
)
from flaregate.providers.workers_ai import _StreamTranslator, to_workers_ai_inputs

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def test_request_system_tools_tool_calls_and_results():
    body = {
        "model": "alias", "max_tokens": 100, "temperature": 0.2, "stop": "END", "user": "u1",
        "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
            {"role": "user", "content": [{"type": "text", "text": "And so?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        ],
    }
    out = to_anthropic_request(body, "claude-x")
    assert out["model"] == "claude-x" and out["max_tokens"] == 100 and out["temperature"] == 0.2
    assert out["system"] == "Be brief.\n\nUse tools."
    assert out["stop_sequences"] == ["END"] and out["metadata"] == {"user_id": "u1"}
    assert out["tools"] == [{"name": "get_weather", "description": "Weather by city",
                             "input_schema": TOOLS[0]["function"]["parameters"]}]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["user", "assistant", "user"]  # the two tool results and the user turn merge
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}]
    last = out["messages"][2]["content"]
    assert last[0] == {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}
    assert last[1]["tool_use_id"] == "call_2"
    assert last[3] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}


def test_request_defaults_and_named_tool_choice():
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    out = to_anthropic_request(body, "m")
    assert out["max_tokens"] == 4096 and "system" not in out
    assert out["tool_choice"] == {"type": "tool", "name": "get_weather"}


def test_response_with_text_and_tool_use():
    message = {"id": "msg_1", "model": "claude", "stop_reason": "tool_use",
               "content": [{"type": "text", "text": "Checking."},
                           {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
               "usage": {"input_tokens": 10, "output_tokens": 5}}
    out = to_openai_completion(message, "alias", created=1)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [{"id": "toolu_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert to_openai_error({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}) == {
        "error": {"message": "busy", "type": "server_error", "code": "overloaded_error", "param": None}}


def sse(kind, data):
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def chunks_of(raw: bytes):
    return [json.loads(e[6:]) for e in raw.decode().split("\n\n") if e.startswith("data: {")]


def test_stream_text_and_tool_deltas_split_anywhere():
    events = b"".join([
        sse("message_start", {"type": "message_start", "message": {"id": "msg_9", "model": "claude",
                                                                   "usage": {"input_tokens": 7}}}),
        sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        sse("ping", {"type": "ping"}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {
            "type": "input_json_delta", "partial_json": '{"city": '}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {
            "type": "input_json_delta", "partial_json": '"Paris"}'}}),
        sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        sse("message_stop", {"type": "message_stop"}),
    ])
    translator = StreamTranslator("alias", include_usage=True, created=1)
    out = b"".join(translator.feed(events[i:i + 7]) for i in range(0, len(events), 7))  # any split
    assert out.endswith(b"data: [DONE]\n\n") and translator.finished
    chunks = chunks_of(out)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas[1:]) == "Hello"
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {"index": 0, "id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city": "Paris"}'
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 9,
                                                                   "total_tokens": 16}
    assert all(c["id"] == "msg_9" for c in chunks)


def test_stream_error_event_becomes_an_openai_error_event():
    out = StreamTranslator("m", False).feed(sse("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                                        "message": "Overloaded"}}))
    assert json.loads(out[6:])["error"]["message"] == "Overloaded"


def test_workers_ai_inputs_and_stream():
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stream": True,
            "max_completion_tokens": 50, "temperature": 0.1, "n": 3}
    assert to_workers_ai_inputs(body) == {"messages": [{"role": "user", "content": "hi"}], "stream": True,
                                          "max_tokens": 50, "temperature": 0.1}
    raw = b'data: {"response": "Hi"}\n\ndata: {"response": " there"}\n\ndata: {"response": "", "usage": {"prompt_tokens": 1, "completion_tokens": 2}}\n\ndata: [DONE]\n\n'
    out = _StreamTranslator("m", include_usage=True).feed(raw)
    chunks = chunks_of(out)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hi there"
    assert chunks[-1]["usage"]["total_tokens"] == 3 and out.endswith(b"data: [DONE]\n\n")


def test_messages_request_to_chat():
    from flaregate.providers.messages_over_chat import to_chat_request

    body = {"model": "m", "max_tokens": 64, "system": [{"type": "text", "text": "Be kind."}], "stream": True,
            "stop_sequences": ["END"], "metadata": {"user_id": "u9"},
            "tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "t", "disable_parallel_tool_use": True},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "look"},
                                             {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                          "data": "AAAA"}}]},
                {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                                                  {"type": "tool_use", "id": "tu1", "name": "t", "input": {"a": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "42"},
                                             {"type": "text", "text": "thanks"}]}]}
    out = to_chat_request(body)
    assert out["messages"][0] == {"role": "system", "content": "Be kind."}
    assert out["messages"][1]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert out["messages"][2] == {"role": "assistant", "content": "calling", "tool_calls": [
        {"id": "tu1", "type": "function", "function": {"name": "t", "arguments": '{"a": 1}'}}]}
    assert out["messages"][3:] == [{"role": "tool", "tool_call_id": "tu1", "content": "42"},
                                   {"role": "user", "content": "thanks"}]
    assert out["tool_choice"] == {"type": "function", "function": {"name": "t"}} and out["parallel_tool_calls"] is False
    assert out["stop"] == ["END"] and out["user"] == "u9" and out["stream_options"] == {"include_usage": True}


def test_chat_chunks_to_anthropic_events():
    from flaregate.providers.messages_over_chat import ChunksToEvents

    def chunk(delta, finish=None, **extra):
        data = {"id": "c1", "model": "gpt", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(data)}\n\n".encode()

    raw = b"".join([
        chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"}), chunk({"content": "!"}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "t", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": ': 1}'}}]}),
        chunk({}, "tool_calls"),
        f"data: {json.dumps({'id': 'c1', 'choices': [], 'usage': {'prompt_tokens': 3, 'completion_tokens': 4}})}\n\n".encode(),
        b"data: [DONE]\n\n",
    ])
    translator = ChunksToEvents("alias")
    out = b"".join(translator.feed(raw[i:i + 11]) for i in range(0, len(raw), 11)).decode()
    events = [json.loads(e.split("data: ", 1)[1]) for e in out.split("\n\n") if e]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert events[0]["message"]["id"] == "c1"
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta"
                   and e["delta"]["type"] == "text_delta")
    assert text == "Hi!"
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use"] and starts[1]["index"] == 1
    assert kinds.count("content_block_stop") == 2
    args = "".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"
                   and e["delta"]["type"] == "input_json_delta")
    assert json.loads(args) == {"a": 1}
    assert events[-2]["delta"]["stop_reason"] == "tool_use" and events[-2]["usage"]["output_tokens"] == 4
