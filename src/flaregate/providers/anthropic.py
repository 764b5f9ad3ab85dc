"""Anthropic's Messages API: OpenAI chat translated both ways, and native ``/v1/messages``.

``chat`` translates the OpenAI body to a Messages request and the answer (JSON or the
stream's events) back to OpenAI shapes, so routing, failover and the client never know.
``messages`` passes an Anthropic body through unchanged (the gateway's ``POST /v1/messages``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ..ports import UpstreamResponse, UpstreamTransport
from .anthropic_translate import (
    StreamTranslator,
    to_anthropic_request,
    to_openai_completion,
    to_openai_error,
)
from .base import CHAT, MESSAGES

API_VERSION = "2023-06-01"


class TranslatedResponse:
    """An Anthropic response read as an OpenAI one (status and headers unchanged)."""

    def __init__(self, response: UpstreamResponse, model: str, stream: bool, include_usage: bool) -> None:
        self.status = response.status
        self.headers = dict(response.headers)
        self._response = response
        self._model = model
        self._stream = stream and response.status == 200
        self._include_usage = include_usage
        if self._stream:
            self.headers["content-type"] = "text/event-stream"
        else:
            self.headers["content-type"] = "application/json"
            self.headers.pop("content-length", None)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if not self._stream:
            yield await self.read()
            return
        translator = StreamTranslator(self._model, self._include_usage)
        async for chunk in self._response.aiter_bytes():
            out = translator.feed(chunk)
            if out:
                yield out

    async def read(self) -> bytes:
        if self._stream:
            return b"".join([chunk async for chunk in self.aiter_bytes()])
        payload = await self._response.read()
        try:
            parsed = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return payload  # not JSON: the caller reports it as malformed, as for any provider
        if not isinstance(parsed, dict):
            return payload
        translated = to_openai_completion(parsed, self._model) if self.status == 200 else to_openai_error(parsed)
        return json.dumps(translated, separators=(",", ":")).encode()

    async def aclose(self) -> None:
        await self._response.aclose()


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
        return TranslatedResponse(response, model, body.get("stream") is True, include_usage)

    async def messages(self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *,
                       timeout: float | None = None) -> UpstreamResponse:
        return await self._post({**body, "model": model}, forward_headers, timeout)

    async def probe(self, timeout: float) -> bool:
        response = await self._transport.send("GET", self._base + "/models", self._headers, b"", timeout)
        try:
            await response.read()
        finally:
            await response.aclose()
        return response.status < 500 and response.status != 429
