"""Responses answers in the cache: which are stored, and the typed events a hit replays."""

from __future__ import annotations

import json
from types import SimpleNamespace

from flaregate.cache.layer import CachePlan
from flaregate.cache.store import CacheEntry
from flaregate.responses.caching import ResponsesRecorder, render_events, storable_problem

RESPONSE = {
    "id": "resp_1", "object": "response", "status": "completed", "model": "m",
    "output": [
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "hello there", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": '{"a":1}',
         "status": "completed"},
    ],
    "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
}


def _events(raw: bytes) -> list[dict]:
    out = []
    for block in raw.decode().strip().split("\n\n"):
        kind, data = block.split("\n", 1)
        event = json.loads(data.removeprefix("data: "))
        assert kind == "event: " + event["type"]
        out.append(event)
    return out


def test_only_completed_response_objects_are_storable():
    assert storable_problem(RESPONSE) is None
    assert storable_problem({**RESPONSE, "status": "incomplete"}) == "status is incomplete"
    assert storable_problem({"choices": []}) == "not a response object"
    assert storable_problem({**RESPONSE, "output": None}) == "no output"


def test_replayed_events_are_numbered_in_order_and_rebuild_the_response():
    events = _events(render_events(RESPONSE))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert events[0]["response"]["output"] == [] and events[0]["response"]["status"] == "in_progress"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "hello there"
    args = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert args == '{"a":1}'
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert done == RESPONSE["output"] and events[-1]["response"] == RESPONSE


def test_a_response_entry_survives_the_store_round_trip():
    entry = CacheEntry.create("oai", json.dumps(RESPONSE), RESPONSE, "response", 100.0, 60)
    again = CacheEntry.from_text(entry.to_text())
    assert again.completion == RESPONSE and again.origin == "response" and again.tokens == 5


class _Layer:
    def __init__(self) -> None:
        self.settings = SimpleNamespace(cache=SimpleNamespace(max_entry_bytes=100_000))
        self.stored: list[dict] = []

    def store(self, plan, provider, completion, origin):
        self.stored.append(completion)
        return ("hot", "warm")

    def cold_write_avoided(self, tiers):
        return "cold" not in tiers


def _record(stream: bool, chunks: list[bytes], ok: bool = True) -> tuple[ResponsesRecorder, _Layer]:
    layer = _Layer()
    plan = CachePlan("MISS", "fg:c2:" + "0" * 64, 60, "default", False, stream, False, "responses")
    recorder = ResponsesRecorder(layer, plan)  # type: ignore[arg-type]
    for chunk in chunks:
        recorder.feed(chunk)
    recorder.finish(SimpleNamespace(provider=SimpleNamespace(name="oai")), 200, ok)
    return recorder, layer


def test_a_streamed_answer_is_stored_from_its_completed_event_split_anywhere():
    raw = render_events(RESPONSE)
    recorder, layer = _record(True, [raw[i:i + 7] for i in range(0, len(raw), 7)])
    assert recorder.stored and layer.stored == [RESPONSE] and recorder.tokens == 5
    assert recorder.cold_write_avoided


def test_incomplete_cut_or_partial_answers_are_not_stored():
    incomplete = render_events({**RESPONSE, "status": "incomplete"}).replace(
        b"response.completed", b"response.incomplete")
    for stream, chunks, ok in ((True, [incomplete], True),
                               (True, [render_events(RESPONSE)[:-40]], False),
                               (False, [json.dumps(RESPONSE).encode()[:50]], False),
                               (False, [json.dumps({**RESPONSE, "status": "failed"}).encode()], True)):
        recorder, layer = _record(stream, chunks, ok)
        assert not recorder.stored and layer.stored == [] and recorder.problem


def test_a_stream_is_stored_at_its_completed_event_before_the_body_ends():
    layer = _Layer()
    plan = CachePlan("MISS", "fg:c2:" + "0" * 64, 60, "default", False, True, False, "responses")
    recorder = ResponsesRecorder(layer, plan)  # type: ignore[arg-type]
    recorder.opened(SimpleNamespace(provider=SimpleNamespace(name="oai")), 200)
    recorder.feed(render_events(RESPONSE))
    assert recorder.stored and layer.stored == [RESPONSE]  # the client may ask again right now
    recorder.finish(SimpleNamespace(provider=SimpleNamespace(name="oai")), 200, False)  # cut after: kept
    assert layer.stored == [RESPONSE]
