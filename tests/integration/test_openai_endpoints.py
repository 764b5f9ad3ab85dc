"""Moderations, images, speech and transcriptions with the official ``openai`` SDK, through the
real server (or the Worker under ``wrangler dev`` with FLAREGATE_TARGET=edge): to the real
mock upstream process (``gpt-test``, an OpenAI-kind provider) and to the built-in mock
(``mock-1``). A multipart upload, a binary answer (whole and streamed), a bad key, the file
before the fields, an upload over MAX_BODY_BYTES; each request leaves one log record."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time

import httpx
import openai
import pytest

from flaregate.providers.mock import PNG_B64
from flaregate.providers.mock import speech_audio as builtin_speech
from tests.support.mock_upstream import speech_audio as upstream_speech

from .conftest import ADMIN_KEY, GATEWAY_KEY, TARGET, UPSTREAM_KEY, run_gateway, upstream_env

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
MAX_BODY = 200_000
AUDIO = bytes(range(256)) * 200 + b"\r\n--not-the-boundary\r\n"  # 51 KiB, CRLFs and dashes inside


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, MAX_BODY_BYTES=str(MAX_BODY), CACHE_TTL_SECONDS="0")
    providers = [*json.loads(env["FLAREGATE_PROVIDERS"]),  # another kind: these endpoints are not its
                 {"name": "claude", "kind": "anthropic", "base_url": upstream.base_url + "/v1"}]
    env["FLAREGATE_PROVIDERS"] = json.dumps(providers)
    env["FLAREGATE_ROUTES"] = json.dumps({**json.loads(env["FLAREGATE_ROUTES"]), "claude-test": ["claude"]})
    with run_gateway(tmp_path_factory.mktemp("openai-endpoints"), env) as gw:
        yield gw


@pytest.fixture
def sdk(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=30)


@pytest.fixture
def audio_file(tmp_path):
    path = tmp_path / "meeting.wav"
    path.write_bytes(AUDIO)
    return path


def rid(kind: str) -> str:
    return f"req_oai_{kind}_{secrets.token_hex(4)}"


def records(server, request_id: str) -> list[dict]:
    deadline = time.monotonic() + 20  # events reach the hub in batches
    while True:
        data = httpx.get(server.base_url + "/v1/logs", params={"request_id": request_id}, headers=ADMIN,
                         timeout=10).json()["data"]
        if data or time.monotonic() > deadline:
            time.sleep(0.5)  # a duplicate would arrive in the same or the next batch
            return httpx.get(server.base_url + "/v1/logs", params={"request_id": request_id}, headers=ADMIN,
                             timeout=10).json()["data"]
        time.sleep(0.2)


def one_record(server, request_id: str, status: int) -> dict:
    found = records(server, request_id)
    assert len(found) == 1 and found[0]["status"] == status, (request_id, found)
    return found[0]


def last_upstream_request(upstream, path: str) -> dict:
    return next(r for r in reversed(upstream.stats()["requests"]) if r["path"] == path)


def test_the_sdk_sends_the_text_fields_before_the_file(audio_file):
    """What ``client.audio.transcriptions.create`` puts on the wire: the order of its parts."""
    seen: dict[str, bytes | str] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        seen["type"], seen["body"] = request.headers["content-type"], request.read()
        return httpx.Response(200, json={"text": "ok"})

    client = openai.OpenAI(base_url="http://sdk.invalid/v1", api_key="k",
                           http_client=httpx.Client(transport=httpx.MockTransport(answer)))
    with audio_file.open("rb") as f:
        client.audio.transcriptions.create(model="m", file=f, language="en", prompt="p", temperature=0.2,
                                           response_format="json")
    boundary = str(seen["type"]).split("boundary=", 1)[1].encode()
    order = [p.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
             for p in bytes(seen["body"]).split(b"--" + boundary)[1:-1]]
    print("openai", openai.__version__, "multipart part order:", order)
    assert order == ["model", "language", "prompt", "response_format", "temperature", "file"]


@pytest.mark.parametrize("model", ["gpt-test", "mock-1"])
def test_moderations(server, upstream, sdk, model):
    request_id = rid("moderations")
    calm = sdk.moderations.create(model=model, input="Have a nice day", extra_headers={"x-request-id": request_id})
    harsh = sdk.moderations.create(model=model, input=["hello", "I will kill the process"])
    assert calm.results[0].flagged is False
    assert [r.flagged for r in harsh.results] == [False, True] and harsh.results[1].categories.violence is True
    if model == "gpt-test":
        sent = last_upstream_request(upstream, "/v1/moderations")
        assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}" and sent["body"]["model"] == "gpt-test"
    record = one_record(server, request_id, 200)
    assert record["model"] == model and record["provider"] == ("upstream" if model == "gpt-test" else "mock")


@pytest.mark.parametrize("model", ["gpt-test", "mock-1"])
def test_images(server, sdk, model):
    request_id = rid("images")
    b64 = sdk.images.generate(model=model, prompt="A lighthouse at dusk", response_format="b64_json", n=2,
                              extra_headers={"x-request-id": request_id})
    assert [d.b64_json for d in b64.data] == [PNG_B64, PNG_B64]
    assert base64.b64decode(b64.data[0].b64_json).startswith(b"\x89PNG")
    url = sdk.images.generate(model=model, prompt="A lighthouse at dusk", response_format="url")
    assert url.data[0].url.startswith(("http://", "https://")) and url.data[0].b64_json is None
    one_record(server, request_id, 200)


@pytest.mark.parametrize("model", ["gpt-test", "mock-1"])
def test_speech_is_a_binary_answer_whole_and_streamed(server, upstream, sdk, model):
    expected = b"".join((upstream_speech if model == "gpt-test" else builtin_speech)("Hello there", "alloy"))
    request_id = rid("speech")
    whole = sdk.audio.speech.create(model=model, voice="alloy", input="Hello there",
                                    extra_headers={"x-request-id": request_id})
    assert whole.content == expected and whole.response.headers["content-type"] == "audio/mpeg"
    with sdk.audio.speech.with_streaming_response.create(model=model, voice="alloy", input="Hello there") as streamed:
        assert streamed.headers["content-type"] == "audio/mpeg"
        assert "content-length" not in streamed.headers  # passed through as it comes, not read whole first
        pieces = list(streamed.iter_bytes())
    assert b"".join(pieces) == expected
    record = one_record(server, request_id, 200)
    assert record["stream_outcome"] == "complete" and record["response_bytes"] == len(expected)
    if model == "gpt-test":
        sent = last_upstream_request(upstream, "/v1/audio/speech")
        assert sent["body"] == {"model": "gpt-test", "voice": "alloy", "input": "Hello there"}


@pytest.mark.parametrize("model", ["gpt-test", "mock-1"])
def test_transcriptions_upload_a_real_file(server, upstream, sdk, audio_file, model):
    request_id = rid("transcriptions")
    with audio_file.open("rb") as f:
        text = sdk.audio.transcriptions.create(model=model, file=f, language="en", prompt="Names: Åsa",
                                               extra_headers={"x-request-id": request_id})
    if model == "gpt-test":  # the upstream saw the very bytes: its transcript names their digest
        digest = hashlib.sha256(AUDIO).hexdigest()[:16]
        assert text.text == f"mock transcript of meeting.wav: {len(AUDIO)} bytes, sha256 {digest}"
        sent = last_upstream_request(upstream, "/v1/audio/transcriptions")
        assert sent["body"]["_order"] == ["model", "language", "prompt", "file"]
        assert sent["body"]["model"] == "gpt-test" and sent["body"]["prompt"] == "Names: Åsa"
        assert sent["body"]["file"]["filename"] == "meeting.wav" and sent["body"]["file"]["size"] == len(AUDIO)
        assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    else:
        assert text.text == f"Flaregate mock transcription of meeting.wav ({len(AUDIO)} bytes)."
    with audio_file.open("rb") as f:  # a text transcript is passed through as it comes
        plain = sdk.audio.transcriptions.create(model=model, file=f, response_format="text")
    assert isinstance(plain, str) and "meeting.wav" in plain
    one_record(server, request_id, 200)


def test_a_bad_key_is_a_401_on_each(server, audio_file):
    bad = openai.OpenAI(base_url=server.base_url + "/v1", api_key="fg-not-a-real-key-000000", max_retries=0,
                        timeout=30)
    calls = [lambda: bad.moderations.create(model="gpt-test", input="x"),
             lambda: bad.images.generate(model="gpt-test", prompt="x"),
             lambda: bad.audio.speech.create(model="gpt-test", voice="alloy", input="x").content,
             lambda: bad.audio.transcriptions.create(model="gpt-test", file=audio_file.open("rb"))]
    for call in calls:
        with pytest.raises(openai.AuthenticationError) as caught:
            call()
        assert caught.value.status_code == 401


def test_the_file_before_the_fields_is_a_clear_400(server):
    request_id = rid("order")
    body = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
            + AUDIO + b'\r\n--B\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-test\r\n--B--\r\n')
    answer = httpx.post(server.base_url + "/v1/audio/transcriptions", content=body, timeout=30,
                        headers={"authorization": f"Bearer {GATEWAY_KEY}", "x-request-id": request_id,
                                 "content-type": "multipart/form-data; boundary=B"})
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["code"] == "invalid_multipart" and error["param"] == "model"
    assert "comes after the file part 'file'" in error["message"]
    json_body = httpx.post(server.base_url + "/v1/audio/transcriptions", json={"model": "gpt-test"}, timeout=30,
                           headers={"authorization": f"Bearer {GATEWAY_KEY}"})
    assert json_body.status_code == 415 and json_body.json()["error"]["code"] == "unsupported_media_type"
    one_record(server, request_id, 400)


def test_an_upload_over_max_body_bytes_is_a_413(server, sdk, tmp_path):
    big = tmp_path / "long.wav"
    big.write_bytes(b"\x01" * (MAX_BODY + 1))
    with pytest.raises(openai.APIStatusError) as caught, big.open("rb") as f:
        sdk.audio.transcriptions.create(model="gpt-test", file=f)
    assert caught.value.status_code == 413
    assert caught.value.response.json()["error"]["code"] == "request_too_large"
    with big.open("rb") as f:  # just under the limit it goes through
        fits = tmp_path / "fits.wav"
        fits.write_bytes(f.read()[:MAX_BODY - 1000])
    with fits.open("rb") as f:
        assert "fits.wav" in sdk.audio.transcriptions.create(model="mock-1", file=f).text


def test_other_provider_kinds_do_not_offer_them(server, sdk, audio_file):
    calls = [lambda: sdk.moderations.create(model="claude-test", input="x"),
             lambda: sdk.images.generate(model="claude-test", prompt="x"),
             lambda: sdk.audio.speech.create(model="claude-test", voice="alloy", input="x").content,
             lambda: sdk.audio.transcriptions.create(model="claude-test", file=audio_file.open("rb"))]
    for call in calls:
        with pytest.raises(openai.BadRequestError) as caught:
            call()
        assert caught.value.code == "unsupported_operation"


def test_speech_cut_mid_body_is_never_passed_off_as_whole(server, upstream, sdk):
    upstream.add_faults({"kind": "reset_mid_body", "path": "/v1/audio/speech"})
    expected = b"".join(upstream_speech("cut me", "alloy"))
    try:
        try:
            got = sdk.audio.speech.create(model="gpt-test", voice="alloy", input="cut me").content
        except openai.APIConnectionError:
            got = None  # the local host cuts the connection: the client sees an incomplete body
    finally:
        upstream.reset()
    if TARGET == "local":
        assert got is None
    else:  # the Worker host ends its stream cleanly (hosts/edge/worker.py): the body is short
        assert got is None or len(got) < len(expected)
    assert sdk.audio.speech.create(model="gpt-test", voice="alloy", input="cut me").content == expected
