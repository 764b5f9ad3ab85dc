"""Any OpenAI-compatible endpoint by base URL: OpenAI, Groq, Mistral, OpenRouter, Together,
vLLM, Ollama (``http://localhost:11434/v1``), the Hugging Face router, ..."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..ports import UpstreamResponse, UpstreamTransport
from .base import CHAT, EMBEDDINGS, RESPONSES, probe_models


class OpenAICompatibleProvider:
    kind = "openai"
    operations = frozenset({CHAT, EMBEDDINGS, RESPONSES})

    def __init__(
        self, name: str, base_url: str, api_key: str | None, transport: UpstreamTransport, timeout: float
    ) -> None:
        self.name = name
        self._base = base_url.rstrip("/")
        self._url = self._base + "/chat/completions"
        self._transport = transport
        self._timeout = timeout
        self._headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"

    async def _post(self, url: str, body: dict[str, Any], model: str, forward_headers: Mapping[str, str],
                    timeout: float | None) -> UpstreamResponse:
        payload = json.dumps({**body, "model": model}, separators=(",", ":")).encode()
        headers = {**forward_headers, **self._headers}
        return await self._transport.send("POST", url, headers, payload, timeout or self._timeout)

    async def chat(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *, timeout: float | None = None
    ) -> UpstreamResponse:
        return await self._post(self._url, body, model, forward_headers, timeout)

    async def embeddings(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *, timeout: float | None = None
    ) -> UpstreamResponse:
        return await self._post(self._base + "/embeddings", body, model, forward_headers, timeout)

    async def responses(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *, timeout: float | None = None
    ) -> UpstreamResponse:
        return await self._post(self._base + "/responses", body, model, forward_headers, timeout)

    async def probe(self, timeout: float) -> bool:
        """``GET /models``: cheap, and answered by every OpenAI-compatible server."""
        return await probe_models(self._transport, self._base + "/models", self._headers, timeout)


class HuggingFaceProvider(OpenAICompatibleProvider):
    """Hugging Face's OpenAI-compatible router (``https://router.huggingface.co/v1``)."""

    kind = "huggingface"
    operations = frozenset({CHAT})
