"""Moderations, images, speech and transcriptions through the one pipeline, in process: the
built-in mock's answers, what an OpenAI-kind provider is sent (a transcription re-encoded as
multipart), the binary pass-through of speech (chunk by chunk, recorded once at its end,
failover only before its first byte), the multipart rules, and the other kinds' refusal."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from flaregate.config import settings_from_vars
from flaregate.gateway import Gateway
from flaregate.hosts.local.runtime import LocalHubClient, LocalRateLimiterClient
from flaregate.http import Headers, Request
from flaregate.hub.aggregator import MetricsHub
from flaregate.multipart import read_form
from flaregate.ports import Ports, UpstreamError
from flaregate.providers.mock import PNG_B64, StaticResponse, speech_audio
from flaregate.ratelimits.limiter import RateLimiter
from tests.support.fakes import (
    FakeClock,
    InlineTasks,
    MemoryKV,
    MemorySql,
    RecordingBroadcaster,
    RecordingScheduler,
)

KEY = "gw-test-key"
AUDIO = b"RIFF\x00\x01\xff\r\n--not-a-boundary\r\n" * 64


class Transport:
    """Records each upstream call (raw body) and answers from a script; the last step repeats."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []

    async def send(self, method, url, headers, body, timeout):
        self.calls.append({"url": url, "headers": dict(headers), "body": body})
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return step


class BreaksAfter(StaticResponse):
    """Sends its chunks, then the connection breaks."""

    async def aiter_bytes(self):
        for chunk in self._chunks:
            yield chunk
        raise UpstreamError("connection reset")


def build(transport: Transport | None = None, **extra: str):
    clock = FakeClock()
    sql = MemorySql()
    hub = MetricsHub(sql, clock, RecordingBroadcaster(), RecordingScheduler())
    tasks = InlineTasks()
    ports = Ports(clock=clock, cache=MemoryKV(clock), upstream=transport or Transport(), tasks=tasks,
                  rate_limiter=LocalRateLimiterClient(RateLimiter(sql, clock)), metrics_hub=LocalHubClient(hub))
    providers = [{"name": "mock", "kind": "mock"},
                 {"name": "a", "base_url": "http://a.invalid/v1", "api_key_env": "A_API_KEY"},
                 {"name": "b", "base_url": "http://b.invalid/v1"},
                 {"name": "claude", "kind": "anthropic", "base_url": "http://c.invalid/v1"}]
    routes = {"mock-1": ["mock"], "a": [{"provider": "a", "model": "whisper-upstream"}], "ab": ["a", "b"],
              "claude": ["claude"]}
    gateway = Gateway(settings_from_vars({"FLAREGATE_API_KEYS": KEY, "A_API_KEY": "sk-upstream",
                                          "FLAREGATE_PROVIDERS": json.dumps(providers),
                                          "FLAREGATE_ROUTES": json.dumps(routes), "RETRY_BACKOFF_BASE_SECONDS": "0",
                                          **extra}), ports)
    events: list[dict[str, Any]] = []
    record = gateway.analytics.record
    gateway.analytics.record = lambda event: (events.append(event), record(event))  # type: ignore[method-assign]

    async def sleep(seconds):
        clock.advance(seconds)

    gateway.upstream.sleep = sleep
    return gateway, events


def post(path: str, body: dict[str, Any], key: str = KEY) -> Request:
    return Request("POST", path, Headers([("content-type", "application/json"), ("authorization", f"Bearer {key}")]),
                   json.dumps(body).encode())


def upload(fields: dict[str, str], file: bytes | None = AUDIO, *, raw: bytes | None = None, ctype: str | None = None,
           key: str = KEY) -> Request:
    if raw is None:
        built = httpx.Request("POST", "http://x", data=fields,
                              files={"file": ("talk.wav", file, "audio/wav")} if file is not None else None)
        raw, ctype = built.read(), built.headers["content-type"]
        if file is None:
            ctype = "multipart/form-data; boundary=none"
            raw = b"".join(f'--none\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                           for k, v in fields.items()) + b"--none--\r\n"
    return Request("POST", "/v1/audio/transcriptions",
                   Headers([("content-type", ctype or ""), ("authorization", f"Bearer {key}")]), raw)


def json_answer(payload: Any) -> StaticResponse:
    return StaticResponse(200, {"content-type": "application/json"}, [json.dumps(payload).encode()])


async def chunks(response) -> list[bytes]:
    return [chunk async for chunk in response.body]


# -- the built-in mock -------------------------------------------------------------------

async def test_the_mock_moderates_draws_and_settles_at_zero():
    gateway, events = build()
    calm = await gateway.handle(post("/v1/moderations", {"model": "mock-1", "input": "Hello"}))
    harsh = await gateway.handle(post("/v1/moderations", {"model": "mock-1", "input": ["hi", "I will kill it"]}))
    assert calm.status == 200 and json.loads(calm.body)["results"][0]["flagged"] is False
    assert [r["flagged"] for r in json.loads(harsh.body)["results"]] == [False, True]
    assert json.loads(harsh.body)["results"][1]["categories"]["violence"] is True
    b64 = json.loads((await gateway.handle(post("/v1/images/generations", {
        "model": "mock-1", "prompt": "a cat", "response_format": "b64_json", "n": 2}))).body)
    assert [d["b64_json"] for d in b64["data"]] == [PNG_B64] * 2
    assert base64.b64decode(PNG_B64).startswith(b"\x89PNG\r\n\x1a\n")
    url = json.loads((await gateway.handle(post("/v1/images/generations", {"model": "mock-1", "prompt": "a cat"}))).body)
    assert url["data"][0]["url"].startswith("https://")
    assert [(e["path"], e["status"], e.get("tokens_in")) for e in events] == [
        ("/v1/moderations", 200, 0), ("/v1/moderations", 200, 0),
        ("/v1/images/generations", 200, None), ("/v1/images/generations", 200, None)]


async def test_speech_is_passed_through_chunk_by_chunk_and_recorded_at_its_end():
    gateway, events = build()
    response = await gateway.handle(post("/v1/audio/speech", {"model": "mock-1", "input": "Hi", "voice": "alloy"}))
    assert response.status == 200 and response.is_stream and response.headers["content-type"] == "audio/mpeg"
    assert events == []  # not yet: recorded once the answer has been sent
    got = await chunks(response)
    assert got == speech_audio("Hi", "alloy") and len(got) == 3
    assert len(events) == 1 and events[0]["status"] == 200 and events[0]["response_bytes"] == sum(map(len, got))
    assert events[0]["stream_outcome"] == "complete" and events[0]["latency_ms"] >= 0


async def test_the_mock_transcribes_the_upload():
    gateway, events = build()
    answer = await gateway.handle(upload({"model": "mock-1", "language": "en"}))
    assert answer.status == 200, answer.body
    assert json.loads(answer.body) == {"text": f"Flaregate mock transcription of talk.wav ({len(AUDIO)} bytes)."}
    srt = await gateway.handle(upload({"model": "mock-1", "response_format": "srt"}))
    assert srt.is_stream and srt.headers["content-type"].startswith("text/plain")
    assert b"".join(await chunks(srt)).startswith(b"1\n00:00:00,000 --> ")
    assert [e["status"] for e in events] == [200, 200]


# -- an OpenAI-kind provider -----------------------------------------------------------

async def test_an_openai_provider_is_sent_each_endpoint_with_its_credential():
    transport = Transport(json_answer({"id": "modr-1", "results": [{"flagged": False}]}),
                          json_answer({"created": 1, "data": [{"url": "u"}], "usage": {"input_tokens": 5, "output_tokens": 7}}),
                          StaticResponse(200, {"content-type": "audio/ogg"}, [b"Ogg", b"S"]),
                          json_answer({"text": "hello"}))
    gateway, events = build(transport)
    assert (await gateway.handle(post("/v1/moderations", {"model": "a", "input": "x"}))).status == 200
    assert (await gateway.handle(post("/v1/images/generations", {"model": "a", "prompt": "p"}))).status == 200
    speech = await gateway.handle(post("/v1/audio/speech", {"model": "a", "input": "x", "voice": "v",
                                                           "response_format": "opus"}))
    assert speech.headers["content-type"] == "audio/ogg" and b"".join(await chunks(speech)) == b"OggS"
    text = await gateway.handle(upload({"model": "a", "language": "en", "prompt": "names: Åsa",
                                        "timestamp_granularities[]": "word"}))
    assert text.status == 200 and json.loads(text.body) == {"text": "hello"}
    urls = [c["url"] for c in transport.calls]
    assert urls == ["http://a.invalid/v1/moderations", "http://a.invalid/v1/images/generations",
                    "http://a.invalid/v1/audio/speech", "http://a.invalid/v1/audio/transcriptions"]
    assert all(c["headers"]["authorization"] == "Bearer sk-upstream" for c in transport.calls)
    assert json.loads(transport.calls[0]["body"]) == {"model": "whisper-upstream", "input": "x"}
    assert transport.calls[2]["headers"]["accept"] == "*/*"
    sent = transport.calls[3]
    form = read_form(sent["body"], sent["headers"]["content-type"], max_bytes=1 << 20)
    assert form.fields == {"model": "whisper-upstream", "language": "en", "prompt": "names: Åsa",
                           "timestamp_granularities[]": ["word"]}
    assert form.files["file"].data == AUDIO and form.files["file"].filename == "talk.wav"
    assert form.files["file"].content_type == "audio/wav"
    assert events[1]["tokens_in"] == 5 and events[1]["tokens_out"] == 7  # gpt-image-1 reports tokens


async def test_speech_fails_over_before_its_first_byte_and_is_cut_after_it():
    transport = Transport(BreaksAfter(200, {"content-type": "audio/mpeg"}, []),  # a: breaks before a byte
                          StaticResponse(200, {"content-type": "audio/mpeg"}, [b"ID3", b"rest"]))  # b
    gateway, events = build(transport)
    answer = await gateway.handle(post("/v1/audio/speech", {"model": "ab", "input": "x", "voice": "v"}))
    assert answer.status == 200 and answer.headers["x-flaregate-provider"] == "b"
    assert b"".join(await chunks(answer)) == b"ID3rest"
    assert events[-1]["failovers"] == 1 and events[-1]["stream_outcome"] == "complete"

    cut = Transport(BreaksAfter(200, {"content-type": "audio/mpeg"}, [b"ID3", b"half"]))
    gateway, events = build(cut)
    answer = await gateway.handle(post("/v1/audio/speech", {"model": "a", "input": "x", "voice": "v"}))
    got = []
    with pytest.raises(UpstreamError):  # the host cuts the connection: a short file is not passed off as whole
        async for chunk in answer.body:
            got.append(chunk)
    assert got == [b"ID3", b"half"]
    assert len(events) == 1 and events[0]["stream_outcome"] == "interrupted" and events[0]["response_bytes"] == 7


async def test_an_upstream_error_on_speech_is_relayed_as_json():
    transport = Transport(StaticResponse(400, {"content-type": "application/json"},
                                         [b'{"error": {"message": "voice not found"}}']))
    gateway, events = build(transport)
    answer = await gateway.handle(post("/v1/audio/speech", {"model": "a", "input": "x", "voice": "nope"}))
    assert answer.status == 400 and not answer.is_stream
    assert "voice not found" in json.loads(answer.body)["error"]["message"]
    assert len(events) == 1 and events[0]["status"] == 400


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/moderations", {"model": "claude", "input": "x"}),
    ("/v1/images/generations", {"model": "claude", "prompt": "x"}),
    ("/v1/audio/speech", {"model": "claude", "input": "x", "voice": "v"}),
])
async def test_other_kinds_do_not_offer_them(path, body):
    gateway, _ = build()
    answer = await gateway.handle(post(path, body))
    assert answer.status == 400 and json.loads(answer.body)["error"]["code"] == "unsupported_operation"
    transcription = await gateway.handle(upload({"model": "claude"}))
    assert json.loads(transcription.body)["error"]["code"] == "unsupported_operation"


# -- the upload's rules ------------------------------------------------------------------

async def test_the_file_first_is_a_clear_400_and_other_bad_uploads_too():
    gateway, events = build()
    file_first = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF\r\n'
                  b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nmock-1\r\n--B--\r\n')
    answer = await gateway.handle(upload({}, raw=file_first, ctype="multipart/form-data; boundary=B"))
    error = json.loads(answer.body)["error"]
    assert answer.status == 400 and error["code"] == "invalid_multipart" and error["param"] == "model"
    assert "comes after the file part" in error["message"]
    cases = [
        (upload({"model": "mock-1"}, file=None), 400, "invalid_multipart"),  # no file part
        (upload({"language": "en"}), 400, "missing_required_parameter"),  # no model
        (upload({"model": "mock-1", "temperature": "hot"}), 400, "invalid_value"),
        (upload({"model": "mock-1", "file": "not a file"}, file=None), 400, "invalid_multipart"),
        (upload({}, raw=b"{}", ctype="application/json"), 415, "unsupported_media_type"),
        (upload({}, raw=b"--B\r\n", ctype="multipart/form-data; boundary=B"), 400, "invalid_multipart"),
        (upload({"model": "mock-1"}, file=b"x" * 2_000_000), 413, "request_too_large"),
        (upload({"model": "mock-1"}, key="wrong"), 401, "invalid_api_key"),
        (upload({"model": "nope"}), 404, "model_not_found"),
    ]
    for request, status, code in cases:
        answer = await gateway.handle(request)
        assert (answer.status, json.loads(answer.body)["error"]["code"]) == (status, code), answer.body
    assert len(events) == 1 + len(cases)  # each refused request recorded once


async def test_a_bad_key_costs_no_parse():
    gateway, events = build()
    answer = await gateway.handle(upload({}, raw=b"garbage", ctype="text/plain", key="wrong"))
    assert answer.status == 401 and len(events) == 1


async def test_the_request_log_sees_the_upload_described_never_its_bytes():
    gateway, events = build(None, LOG_BODIES="both")
    await gateway.handle(upload({"model": "mock-1"}))
    speech = await gateway.handle(post("/v1/audio/speech", {"model": "mock-1", "input": "Hi", "voice": "alloy"}))
    await chunks(speech)
    logged = json.loads(events[0]["request_body"])
    assert logged["file"] == {"filename": "talk.wav", "content_type": "audio/wav", "size": len(AUDIO)}
    assert "Flaregate mock transcription" in events[0]["response_body"]
    assert "response_body" not in events[1]  # audio is not text: not kept
