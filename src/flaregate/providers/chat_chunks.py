"""The common reading of an OpenAI ``chat.completion.chunk`` stream, for translators that
write another API's events from it (Anthropic messages, the Responses API).

``feed`` takes SSE bytes split anywhere and calls the subclass's hooks in stream order:
``_start`` once before the first chunk, ``_choice`` per choice, ``_error`` for an error
object in the stream, ``_done`` at ``[DONE]``; ``_usage`` keeps the last usage seen.
"""

from __future__ import annotations

import json
from typing import Any

from .anthropic_translate import SseParser


class ChatChunkTranslator:
    def __init__(self) -> None:
        self._parser = SseParser()
        self._started = False
        self._usage: Any = None

    def _start(self, chunk: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _choice(self, choice: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _error(self, error: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _done(self) -> bytes:
        raise NotImplementedError

    def feed(self, raw: bytes) -> bytes:
        out: list[bytes] = []
        for _, data in self._parser.feed(raw):
            if data.strip() == "[DONE]":
                out.append(self._done())
                continue
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk and "choices" not in chunk:
                out.append(self._error(chunk["error"] if isinstance(chunk["error"], dict) else {}))
                continue
            if not self._started:
                self._started = True
                out.append(self._start(chunk))
            if chunk.get("usage"):
                self._usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if isinstance(choice, dict):
                    out.append(self._choice(choice))
        return b"".join(out)
