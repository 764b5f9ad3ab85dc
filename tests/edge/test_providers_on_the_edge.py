"""Providers on the Worker: secrets named by api_key_env, and Workers AI through env.AI."""

from __future__ import annotations

import json

from .conftest import FakeBodyStream, FakeFetchResponse
from .test_worker import CHAT, call, chat_request


class FakeAi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    async def run(self, model: str, inputs: dict) -> dict:
        self.calls.append((model, inputs))
        return {"response": "from the binding", "usage": {"prompt_tokens": 3, "completion_tokens": 3}}


async def test_workers_ai_uses_the_ai_binding(make_env):
    providers = [{"name": "cf", "kind": "workers_ai", "account_id": "acct"}]
    env = make_env(FLAREGATE_PROVIDERS=json.dumps(providers),
                   FLAREGATE_ROUTES=json.dumps({"llama": ["cf/@cf/meta/llama-3.1-8b-instruct"]}))
    env.AI = FakeAi()
    response = await call(env, chat_request({**CHAT, "model": "llama"}))
    assert response.status == 200, response.body
    assert response.json()["choices"][0]["message"]["content"] == "from the binding"
    assert env.AI.calls[0][0] == "@cf/meta/llama-3.1-8b-instruct"
    assert response.headers["x-flaregate-provider"] == "cf"


async def test_provider_keys_named_by_api_key_env_reach_the_provider(make_env, fake_http):
    providers = [{"name": "up", "base_url": "https://llm.example/v1", "api_key_env": "UP_API_KEY"}]
    env = make_env(FLAREGATE_PROVIDERS=json.dumps(providers), UP_API_KEY="sk-from-secret")
    upstream = {"id": "x", "object": "chat.completion", "choices": [], "usage": {}}
    fake_http.responses.append(FakeFetchResponse(
        200, {"Content-Type": "application/json"}, FakeBodyStream([json.dumps(upstream).encode()])))
    response = await call(env, chat_request({**CHAT, "model": "any"}))
    assert response.status == 200
    assert fake_http.calls[0]["headers"]["authorization"] == "Bearer sk-from-secret"
