"""The gateway's own limit, through the real server: capacity 5, slow refill."""

import httpx
import openai
import pytest

from .conftest import GATEWAY_KEY, run_gateway, upstream_env


@pytest.fixture(scope="module")
def limited(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, RATE_LIMIT_CAPACITY="5", RATE_LIMIT_REFILL_PER_SECOND="0.01")
    with run_gateway(tmp_path_factory.mktemp("limited"), env) as server:
        yield server


def test_sixth_quick_request_gets_429_with_retry_after(limited):
    body = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    responses = [httpx.post(limited.base_url + "/v1/chat/completions", json=body, headers=headers) for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses] == ["4", "3", "2", "1", "0", "0"]
    refused = responses[-1]
    assert int(refused.headers["retry-after"]) >= 99  # 1 token at 0.01/s
    assert refused.headers["x-ratelimit-limit-requests"] == "5"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert refused.json()["error"]["type"] == "rate_limit_error"
    # The official SDK sees its own exception type.
    client = openai.OpenAI(base_url=limited.base_url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**body)
