"""An upstream response whose body is rewritten into another API's shape, streamed or not.

Subclasses say how: a stream translator (``feed(bytes) -> bytes``) and a translation of the
parsed JSON body. Status and headers pass through (content type set, length dropped).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from ..ports import UpstreamResponse


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
        return json.dumps(self.translate(parsed), separators=(",", ":")).encode()

    async def aclose(self) -> None:
        await self._response.aclose()
