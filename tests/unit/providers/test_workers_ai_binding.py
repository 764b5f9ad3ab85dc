"""The Workers AI provider over the edge's AI binding port (the binding faked, as on CPython)."""

import json

import pytest

from flaregate.hosts.edge.workers_ai import WorkersAiBinding
from flaregate.ports import UpstreamError
from flaregate.providers.workers_ai import WorkersAiProvider


class FakeJsStream:
    def __init__(self, chunks, fail=False):
        self.chunks, self.fail = chunks, fail

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        for chunk in self.chunks:
            yield chunk
        if self.fail:
            raise RuntimeError("JsException: stream errored")


class FakeAi:
    def __init__(self, answer=None, error=None):
        self.answer, self.error, self.calls = answer, error, []

    async def run(self, model, inputs):
        self.calls.append((model, inputs))
        if self.error:
            raise self.error
        return self.answer


def provider(ai):
    return WorkersAiProvider("cf", "http://unused", "acct", None, transport=None, timeout=5,
                             binding=WorkersAiBinding(lambda: ai))


async def test_binding_answer_becomes_an_openai_completion():
    ai = FakeAi({"response": "hello", "usage": {"prompt_tokens": 2, "completion_tokens": 1}})
    response = await provider(ai).chat({"messages": [{"role": "user", "content": "hi"}]}, "@cf/m", {})
    body = json.loads(await response.read())
    assert body["choices"][0]["message"]["content"] == "hello" and body["usage"]["total_tokens"] == 3
    assert ai.calls == [("@cf/m", {"messages": [{"role": "user", "content": "hi"}]})]


async def test_binding_stream_and_its_failures():
    chunks = [b'data: {"response": "a"}\n\n', b'data: {"response": "b"}\n\ndata: [DONE]\n\n']
    response = await provider(FakeAi(FakeJsStream(chunks))).chat(
        {"stream": True, "messages": [{"role": "user", "content": "x"}]}, "@cf/m", {})
    text = (await response.read()).decode()
    deltas = [json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in text.split("\n\n")
              if e.startswith("data: {")]
    assert "".join(deltas) == "ab" and text.endswith("data: [DONE]\n\n")
    broken = await provider(FakeAi(FakeJsStream(chunks[:1], fail=True))).chat(
        {"stream": True, "messages": [{"role": "user", "content": "x"}]}, "@cf/m", {})
    with pytest.raises(UpstreamError, match="stream failed"):
        await broken.read()
    with pytest.raises(UpstreamError, match="binding"):
        await provider(FakeAi(error=RuntimeError("3040: capacity"))).chat(
            {"messages": [{"role": "user", "content": "x"}]}, "@cf/m", {})
