"""Bad input gets an OpenAI-style 4xx from the real server, never a 5xx or a stack trace."""

import json

import httpx
import pytest

from .conftest import GATEWAY_KEY

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
GOOD = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"{not json", {"content-type": "application/json", **AUTH}, 400, "invalid_json"),
        (json.dumps(GOOD).encode(), {"content-type": "text/plain", **AUTH}, 415, "unsupported_media_type"),
        (json.dumps({"messages": GOOD["messages"]}).encode(), {"content-type": "application/json", **AUTH}, 400, "missing_required_parameter"),
        (json.dumps({"model": "mock-1"}).encode(), {"content-type": "application/json", **AUTH}, 400, "missing_required_parameter"),
        (json.dumps({**GOOD, "model": "no-such-model"}).encode(), {"content-type": "application/json", **AUTH}, 404, "model_not_found"),
        (json.dumps(GOOD).encode(), {"content-type": "application/json"}, 401, "invalid_api_key"),
        (json.dumps(GOOD).encode(), {"content-type": "application/json", "authorization": "Bearer wrong"}, 401, "invalid_api_key"),
        (b'{"model": "mock-1", "messages": [' + b'{"role": "user", "content": "x"},' * 40000 + b"]}",
         {"content-type": "application/json", **AUTH}, 413, "request_too_large"),
    ],
)
def test_bad_request_answers(gateway, content, headers, status, code):
    response = httpx.post(gateway.base_url + "/v1/chat/completions", content=content, headers=headers)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "code", "param"}
    assert "Traceback" not in response.text


def _chunked(data: bytes, piece: int = 65536):
    for i in range(0, len(data), piece):
        yield data[i:i + piece]


def test_chunked_bodies_are_capped_like_declared_ones(gateway):
    """No Content-Length (chunked transfer): over the limit is a 413, under it is served."""
    big = b'{"model": "mock-1", "messages": [' + b'{"role": "user", "content": "x"},' * 200000 + b"]}"
    headers = {"content-type": "application/json", **AUTH}
    response = httpx.post(gateway.base_url + "/v1/chat/completions", content=_chunked(big), headers=headers,
                          timeout=30)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    small = httpx.post(gateway.base_url + "/v1/chat/completions", content=_chunked(json.dumps(GOOD).encode()),
                       headers=headers, timeout=30)
    assert small.request.headers["transfer-encoding"] == "chunked"
    assert small.status_code == 200


def test_unknown_path_and_wrong_method(gateway):
    assert httpx.get(gateway.base_url + "/v2/whatever").status_code == 404
    wrong = httpx.get(gateway.base_url + "/v1/chat/completions", headers=AUTH)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


def test_server_still_healthy_after_bad_input(gateway):
    response = httpx.post(gateway.base_url + "/v1/chat/completions", json=GOOD, headers=AUTH)
    assert response.status_code == 200
