"""A partial SSE event a pass-through client already got is ended so that it parses: cut at
every byte of real chat chunks, the event plus its ending is one whole event whose JSON
carries the gateway's error at its top (what the openai SDK raises on)."""

from __future__ import annotations

import json

import pytest

from flaregate.pipeline.partial_event import ending

ERROR = {"message": "The upstream stream was interrupted: reset", "type": "api_error",
         "code": "upstream_stream_interrupted", "param": None}
CHUNKS = [
    {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1796684712, "model": "gpt-4o-mini",
     "choices": [{"index": 0, "delta": {"content": "h\u00e9llo \u4e16\u754c \U0001f600 \"quoted\" \\ end"},
                  "logprobs": None, "finish_reason": None}]},
    {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None,
     "x": [1.5e-3, -2, True, False, [], {}, [[1], {"a": [None]}]]},
    {"id": "chatcmpl-2", "choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": 20}},
]


def events_of(stream: bytes) -> list[bytes]:
    return [e for e in stream.split(b"\n\n") if e.strip()]


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("spaces", [False, True])
def test_every_cut_of_a_data_line_ends_as_json_with_the_error(chunk, spaces):
    text = json.dumps(chunk, ensure_ascii=False, separators=None if spaces else (",", ":")).encode()
    line = b"data: " + text
    for cut in range(len(b"data: "), len(line)):
        partial = line[:cut]
        whole = partial + ending(partial, ERROR)
        assert whole.endswith(b"\n\n") and whole.count(b"\n\n") == 1, (cut, whole)
        data = json.loads(whole[len(b"data:"):].decode())  # valid UTF-8 and valid JSON
        assert data["error"] == ERROR, (cut, whole)


def test_an_event_field_before_the_data_line_is_kept():
    partial = b'event: chunk\ndata: {"a": "b'
    whole = partial + ending(partial, ERROR)
    assert json.loads(whole.split(b"\ndata: ")[1])["error"] == ERROR


def test_a_whole_line_or_nothing_pending():
    assert ending(b"", ERROR) == b""
    assert ending(b'data: {"a": 1}\n', ERROR) == b"\n"  # the line was whole: only the blank line
    assert ending(b'data: {"a": 1}', ERROR) == b"\n\n"  # whole JSON: it stays as the upstream sent it


@pytest.mark.parametrize("partial", [b"dat", b"event: content_blo", b"data: xxxxxxxx", b'data: [1, 2',
                                     b'data: "a str', b'data: {"a":\ndata: 1', b'data: {"a"}'])
def test_anything_else_is_only_ended(partial):
    assert ending(partial, ERROR) == b"\n\n"
