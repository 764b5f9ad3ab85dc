"""Streamed answers assembled into one completion, and completions rendered as streams."""

import asyncio
import json

from hypothesis import given
from hypothesis import strategies as st

from flaregate.cache.sse_completion import StreamAssembler, render_sse, storable_problem
from flaregate.providers.mock import MockProvider


def sse(*events) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def chunk(delta, finish=None, index=0, **extra):
    return {"id": "c1", "object": "chat.completion.chunk", "created": 5, "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}], **extra}


def assemble(data: bytes, max_bytes=1_000_000):
    assembler = StreamAssembler(max_bytes)
    assembler.feed(data)
    return assembler.completion(), assembler.problem


async def mock_answer(stream, include_usage=False):
    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "one two  three, four"}]}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return await (await MockProvider().chat(body, "m", {})).read()


async def test_a_streamed_answer_assembles_into_the_non_streamed_one():
    streamed, problem = assemble(await mock_answer(True, include_usage=True))
    plain = json.loads(await mock_answer(False))
    assert problem is None
    for mine, theirs in zip(streamed["choices"], plain["choices"], strict=True):
        assert (mine["message"], mine["finish_reason"]) == (theirs["message"], theirs["finish_reason"])
    assert streamed["usage"] == plain["usage"] and streamed["object"] == "chat.completion"


def test_tool_calls_reasoning_and_refusal_are_merged():
    data = sse(
        chunk({"role": "assistant", "content": None, "reasoning_content": "think "}),
        chunk({"reasoning_content": "hard"}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "weather", "arguments": '{"ci'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                               "function": {"name": "time", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        b"[DONE]",
    )
    completion, problem = assemble(data)
    message = completion["choices"][0]["message"]
    assert problem is None and message["content"] is None and message["reasoning_content"] == "think hard"
    assert message["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
    ]


def test_several_choices_logprobs_comments_and_crlf():
    data = sse(chunk({"role": "assistant", "content": "a"}, index=1), chunk({"content": "x"}, index=0))
    data += b": keep-alive\r\n\r\n"
    data += sse(chunk({"content": "b"}, index=1), chunk({}, "stop", index=0), chunk({}, "stop", index=1))
    data = data.replace(b"\n\n", b"\r\n\r\n")
    logprob = {"id": "c1", "created": 5, "model": "m", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {}, "logprobs": {"content": [{"token": "x", "logprob": -0.1}]},
                            "finish_reason": None}]}
    completion, problem = assemble(sse(logprob) + data + b"data: [DONE]\r\n\r\n")
    assert problem is None
    assert [c["message"]["content"] for c in completion["choices"]] == ["x", "ab"]
    assert completion["choices"][0]["logprobs"] == {"content": [{"token": "x", "logprob": -0.1}]}


@given(st.lists(st.integers(1, 400), max_size=30))
def test_chunk_boundaries_anywhere_give_the_same_completion(cuts):
    data = asyncio.run(mock_answer(True, include_usage=True))
    expected, _ = assemble(data)
    assembler = StreamAssembler(1_000_000)
    position = 0
    for cut in cuts:
        assembler.feed(data[position:position + cut])
        position += cut
    assembler.feed(data[position:])
    assert assembler.completion() == expected


def test_incomplete_broken_or_oversized_streams_are_not_assembled():
    whole = sse(chunk({"role": "assistant", "content": "hi"}), chunk({}, "stop"), b"[DONE]")
    assert assemble(whole[:-8])[1] == "the stream did not end with data: [DONE]"
    assert assemble(sse(chunk({"content": "hi"}), {"error": {"message": "boom"}}, b"[DONE]"))[1] == \
        "the stream carried an error event"
    assert assemble(b"event: error\ndata: {}\n\n" + whole)[1] == "the stream carried an error event"
    assert assemble(sse(b"{not json") + whole)[1] == "the stream carried an event that is not JSON"
    assert "larger" in assemble(whole, max_bytes=50)[1]
    assert assemble(sse(b"[DONE]"))[1] == "the stream had no choices"
    for depth in (700, 5000):  # too deep to copy, too deep to parse
        deep = b'{"choices": [{"index": 0, "delta": {"x": ' + b"[" * depth + b"]" * depth + b"}}]}"
        assert assemble(sse(deep) + whole)[1] == "the stream carried an event nested too deeply"


def test_storable_rules():
    def completion(finish):
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": finish}]}

    assert storable_problem(completion("stop"), True) is None
    assert "length" in storable_problem(completion("length"), True)
    assert storable_problem(completion("length"), False) is None
    assert storable_problem(completion(None), True) == "an unfinished choice"
    assert storable_problem({"error": {"message": "x"}}, True) == "not a completion"
    assert storable_problem({"choices": []}, True) == "no choices"


messages = st.fixed_dictionaries(
    {"role": st.just("assistant"), "content": st.one_of(st.none(), st.text(max_size=300))},
    optional={"refusal": st.text(min_size=1, max_size=20), "reasoning_content": st.text(min_size=1, max_size=50),
              "tool_calls": st.lists(st.fixed_dictionaries(
                  {"id": st.text(min_size=1, max_size=5), "type": st.just("function"),
                   "function": st.fixed_dictionaries({"name": st.text(min_size=1, max_size=5),
                                                      "arguments": st.text(max_size=20)})}),
                  min_size=1, max_size=3)})
completions = st.builds(
    lambda msgs, finishes, usage: {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
        "choices": [{"index": i, "message": m, "logprobs": None, "finish_reason": f}
                    for i, (m, f) in enumerate(zip(msgs, finishes, strict=False))],
        **({"usage": usage} if usage else {})},
    st.lists(messages, min_size=1, max_size=3),
    st.lists(st.sampled_from(["stop", "tool_calls", "length"]), min_size=3, max_size=3),
    st.one_of(st.none(), st.fixed_dictionaries({"prompt_tokens": st.integers(0, 9),
                                                "completion_tokens": st.integers(0, 9),
                                                "total_tokens": st.integers(0, 18)})))


@given(completions)
def test_render_then_assemble_gives_back_the_same_completion(completion):
    streamed = render_sse(completion, include_usage=True)
    assert streamed.endswith(b"data: [DONE]\n\n")
    events = [e for e in streamed.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    back, problem = assemble(streamed)
    assert problem is None and back == completion


def test_usage_is_replayed_only_when_asked_for():
    completion = {"id": "x", "created": 1, "model": "m", "usage": {"total_tokens": 3},
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"},
                               "finish_reason": "stop"}]}
    without = render_sse(completion, include_usage=False)
    assert b'"usage"' not in without
    final = [e for e in render_sse(completion, include_usage=True).split(b"\n\n") if e][-2]
    assert json.loads(final[6:])["usage"] == {"total_tokens": 3}
