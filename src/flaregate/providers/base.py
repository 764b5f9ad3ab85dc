"""The shape every provider adapter has."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..ports import UpstreamResponse


class Provider(Protocol):
    name: str

    async def chat(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str]
    ) -> UpstreamResponse:
        """Send an OpenAI chat-completions body (stream or not) and return the raw response,
        whose body is OpenAI-shaped JSON or OpenAI-shaped SSE."""
