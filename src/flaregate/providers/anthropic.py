"""Anthropic's Messages API: OpenAI chat translated both ways, and native ``/v1/messages``.

``chat`` translates the OpenAI body to a Messages request and the answer (JSON or the
stream's events) back to OpenAI shapes, so routing, failover and the client never know.
``messages`` passes an Anthropic body through unchanged (the gateway's ``POST /v1/messages``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..ports import UpstreamResponse, UpstreamTransport
from .anthropic_translate import (
    StreamTranslator,
    to_anthropic_request,
    to_openai_completion,
    to_openai_error,
)
from .base import CHAT, MESSAGES, probe_models
from .translated import TranslatedResponse

API_VERSION = "2023-06-01"


class OpenAIFromAnthropic(TranslatedResponse):
    """An Anthropic response read as an OpenAI one."""

    def __init__(self, response: UpstreamResponse, model: str, stream: bool, include_usage: bool) -> None:
        super().__init__(response, model, stream)
        self._include_usage = include_usage

    def stream_translator(self) -> StreamTranslator:
        return StreamTranslator(self._model, self._include_usage)

    def translate(self, parsed: dict[str, Any]) -> dict[str, Any]:
        return to_openai_completion(parsed, self._model) if self.status == 200 else to_openai_error(parsed)


class AnthropicProvider:
    kind = "anthropic"
    operations = frozenset({CHAT, MESSAGES})

    def __init__(self, name: str, base_url: str, api_key: str | None, transport: UpstreamTransport,
                 timeout: float) -> None:
        self.name = name
        self._base = base_url.rstrip("/")
        self._transport = transport
        self._timeout = timeout
        self._headers = {"content-type": "application/json", "anthropic-version": API_VERSION,
                         "accept": "application/json, text/event-stream"}
        if api_key:
            self._headers["x-api-key"] = api_key

    async def _post(self, body: dict[str, Any], forward_headers: Mapping[str, str],
                    timeout: float | None) -> UpstreamResponse:
        payload = json.dumps(body, separators=(",", ":")).encode()
        return await self._transport.send("POST", self._base + "/messages", {**forward_headers, **self._headers},
                                          payload, timeout or self._timeout)

    async def chat(self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *,
                   timeout: float | None = None) -> UpstreamResponse:
        response = await self._post(to_anthropic_request(body, model), forward_headers, timeout)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return OpenAIFromAnthropic(response, model, body.get("stream") is True, include_usage)

    async def messages(self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *,
                       timeout: float | None = None) -> UpstreamResponse:
        return await self._post({**body, "model": model}, forward_headers, timeout)

    async def probe(self, timeout: float) -> bool:
        return await probe_models(self._transport, self._base + "/models", self._headers, timeout)
