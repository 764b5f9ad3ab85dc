"""A client-chosen model name never becomes more than a model in the Workers AI REST path."""

import pytest

from flaregate.errors import GatewayError
from flaregate.providers.workers_ai import WorkersAiProvider, check_model_name


class RecordingTransport:
    def __init__(self):
        self.urls = []

    async def send(self, method, url, headers, body, timeout):
        self.urls.append(url)
        raise AssertionError("no call may leave for a refused model name")


@pytest.mark.parametrize("model", ["@cf/meta/llama-3.1-8b-instruct", "@hf/thebloke/zephyr-7b-beta-awq",
                                   "@cf/qwen/qwen1.5-0.5b-chat", "@cf/meta/llama-3.3-70b-instruct-fp8-fast"])
def test_real_model_names_pass(model):
    assert check_model_name(model) == model


@pytest.mark.parametrize("model", ["../../../../zones?x=", "@cf/../../zones", "..", "@cf/meta/./x", "a//b",
                                   "@cf/x?y=1", "@cf/x#frag", "@cf/x%2f..%2fzones", "@cf/x y", "@cf\\..\\x",
                                   "/zones", "@cf/x/", "", "a" * 300, "@cf/\u2025/x", "@cf/x\r\nHost: evil"])
async def test_traversal_and_url_syntax_are_refused_before_any_call(model):
    transport = RecordingTransport()
    provider = WorkersAiProvider("cf", "https://api.cloudflare.com/client/v4", "acct", "token", transport, 5)
    with pytest.raises(GatewayError) as info:
        await provider.chat({"model": model, "messages": [{"role": "user", "content": "hi"}]}, model, {})
    assert info.value.status == 400 and info.value.code == "invalid_model"
    assert transport.urls == []
