"""An upstream response whose body is rewritten into another API's shape, streamed or not.

Subclasses say how: a stream translator (``feed(bytes) -> bytes``) and a translation of the
parsed JSON body. Status and headers pass through (content type set, length dropped).

The translator parses the upstream's bytes before the upstream caller sees any of its
output, so the raw stream is held to the caps here (``limit``: the caller's; else the
defaults): each event within ``max_event_bytes``, all of it within ``max_stream_bytes``
(an endless run of pings translates to nothing, yet is counted). ``limit`` is passed on to
the wrapped response, whose ``read`` keeps to ``max_response_bytes``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from ..ports import DEFAULT_LIMITS, UpstreamLimits, UpstreamResponse, UpstreamResponseTooLarge
from ..sse_buffer import EventBounds


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The chunks joined; UpstreamResponseTooLarge as soon as they pass ``limit`` bytes."""
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise UpstreamResponseTooLarge("a body", limit)
        parts.append(chunk)
    return b"".join(parts)


class StreamTranslator(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...


class TranslatedResponse:
    def __init__(self, response: UpstreamResponse, model: str, stream: bool) -> None:
        self.status = response.status
        self._response = response
        self._model = model
        self._stream = stream and response.status == 200
        self.headers = {**response.headers, "content-type": "text/event-stream" if self._stream
                        else "application/json"}
        self.headers.pop("content-length", None)  # the body changes length
        self._limits = DEFAULT_LIMITS

    def limit(self, limits: UpstreamLimits) -> None:
        self._limits = limits
        inner = getattr(self._response, "limit", None)
        if inner is not None:
            inner(limits)

    def stream_translator(self) -> StreamTranslator:
        raise NotImplementedError

    def translate(self, parsed: dict[str, Any]) -> dict[str, Any]:
        """The JSON body (an answer when status is 200, else an error) in the other shape."""
        raise NotImplementedError

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if not self._stream:
            yield await self.read()
            return
        translator = self.stream_translator()
        bounds = EventBounds(self._limits.max_event_bytes, self._limits.max_stream_bytes)
        async for chunk in self._response.aiter_bytes():
            bounds.check(chunk)
            out = translator.feed(chunk)
            if out:
                yield out

    async def read(self) -> bytes:
        if self._stream:
            return await read_limited(self.aiter_bytes(), self._limits.max_response_bytes)
        payload = await self._response.read()
        try:
            parsed = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return payload  # not JSON: the caller reports it as malformed, as for any provider
        if not isinstance(parsed, dict):
            return payload
        return json.dumps(self.translate(parsed), separators=(",", ":")).encode()

    async def aclose(self) -> None:
        await self._response.aclose()
