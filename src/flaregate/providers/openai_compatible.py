"""Any OpenAI-compatible endpoint by base URL: OpenAI, Groq, Mistral, OpenRouter, Together,
vLLM, Ollama (``http://localhost:11434/v1``), the Hugging Face router, ..."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..multipart import Upload, encode_form
from ..ports import UpstreamResponse, UpstreamTransport
from .base import (
    CHAT,
    EMBEDDINGS,
    IMAGES,
    MODERATIONS,
    RESPONSES,
    SPEECH,
    TRANSCRIPTIONS,
    probe_models,
)


class OpenAICompatibleProvider:
    kind = "openai"
    operations = frozenset({CHAT, EMBEDDINGS, RESPONSES, MODERATIONS, IMAGES, SPEECH, TRANSCRIPTIONS})

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

    async def moderations(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *, timeout: float | None = None
    ) -> UpstreamResponse:
        return await self._post(self._base + "/moderations", body, model, forward_headers, timeout)

    async def images(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *, timeout: float | None = None
    ) -> UpstreamResponse:
        return await self._post(self._base + "/images/generations", body, model, forward_headers, timeout)

    async def speech(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *, timeout: float | None = None
    ) -> UpstreamResponse:
        """Audio out: passed through as it comes (the caller reads it as a binary answer)."""
        payload = json.dumps({**body, "model": model}, separators=(",", ":")).encode()
        headers = {**forward_headers, **self._headers, "accept": "*/*"}
        return await self._transport.send("POST", self._base + "/audio/speech", headers, payload,
                                          timeout or self._timeout)

    async def transcriptions(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *, timeout: float | None = None
    ) -> UpstreamResponse:
        """The upload again as multipart: the text fields (``model`` first, the target's), then the file."""
        fields: list[tuple[str, str]] = [("model", model)]
        files: list[tuple[str, Upload]] = []
        for name, value in body.items():
            if isinstance(value, Upload):
                files.append((name, value))
            elif name != "model":
                fields += [(name, str(v)) for v in value] if isinstance(value, list) else [(name, str(value))]
        content_type, payload = encode_form(fields, files)
        headers = {**forward_headers, **self._headers, "content-type": content_type}
        return await self._transport.send("POST", self._base + "/audio/transcriptions", headers, payload,
                                          timeout or self._timeout)

    async def probe(self, timeout: float) -> bool:
        """``GET /models``: cheap, and answered by every OpenAI-compatible server."""
        return await probe_models(self._transport, self._base + "/models", self._headers, timeout)


class HuggingFaceProvider(OpenAICompatibleProvider):
    """Hugging Face's OpenAI-compatible router (``https://router.huggingface.co/v1``)."""

    kind = "huggingface"
    operations = frozenset({CHAT})
