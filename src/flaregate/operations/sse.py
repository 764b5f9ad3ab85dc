"""Stream watches: what the relay reads of a passing stream, per dialect."""

from __future__ import annotations

import json

from ..accounting import StreamUsage, Usage

_TAIL = 256  # bytes kept to see the end marker, whatever the chunking


class _Tail:
    def __init__(self, marker: bytes) -> None:
        self._marker = marker
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk)[-_TAIL:]

    def complete(self) -> bool:
        return self._marker in self._tail


class ChatStream(_Tail):
    """OpenAI chat SSE: ends in ``data: [DONE]``; its usage chunk is read only when the
    limits need it (sniffing costs CPU on every chunk)."""

    def __init__(self, needs_usage: bool) -> None:
        super().__init__(b"[DONE]")
        self._sniffer = StreamUsage() if needs_usage else None

    def feed(self, chunk: bytes) -> None:
        super().feed(chunk)
        if self._sniffer is not None:
            self._sniffer.feed(chunk)

    def usage(self) -> Usage | None:
        return self._sniffer.usage() if self._sniffer is not None else None

    def error_event(self, message: str, code: str) -> bytes:
        error = {"error": {"message": message, "type": "api_error", "code": code, "param": None}}
        return b"data: " + json.dumps(error).encode() + b"\n\ndata: [DONE]\n\n"


class AnthropicStream(_Tail):
    """Anthropic Messages SSE: ends with ``message_stop``; a break is an ``error`` event."""

    def __init__(self) -> None:
        super().__init__(b"message_stop")

    def usage(self) -> Usage | None:
        return None  # passed through unread: the estimate stands

    def error_event(self, message: str, code: str) -> bytes:
        error = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n"
