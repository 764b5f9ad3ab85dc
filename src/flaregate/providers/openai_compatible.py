"""Any OpenAI-compatible endpoint by base URL (OpenAI, Groq, Mistral, vLLM, Ollama, ...)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..ports import UpstreamResponse, UpstreamTransport


class OpenAICompatibleProvider:
    def __init__(
        self, name: str, base_url: str, api_key: str | None, transport: UpstreamTransport, timeout: float
    ) -> None:
        self.name = name
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._transport = transport
        self._timeout = timeout
        self._headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"

    async def chat(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str]
    ) -> UpstreamResponse:
        payload = json.dumps({**body, "model": model}, separators=(",", ":")).encode()
        headers = {**forward_headers, **self._headers}
        return await self._transport.send("POST", self._url, headers, payload, self._timeout)
