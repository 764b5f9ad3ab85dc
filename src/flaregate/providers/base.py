"""The shape every provider adapter has."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..ports import UpstreamResponse, UpstreamTransport

# Operations a provider may offer (``Provider.operations``); the gateway only routes an
# operation to the targets whose provider has it.
CHAT, EMBEDDINGS, MESSAGES = "chat", "embeddings", "messages"
RESPONSES = "responses"  # OpenAI's Responses API, passed through unchanged
# OpenAI's other endpoints, passed through to the providers that have them (the OpenAI kind
# and the built-in mock): JSON in, JSON out, but speech (audio out, passed through as it
# comes) and transcriptions (a multipart upload in, re-encoded for the provider).
MODERATIONS, IMAGES, SPEECH, TRANSCRIPTIONS = "moderations", "images", "speech", "transcriptions"


class Provider(Protocol):
    name: str
    kind: str
    operations: frozenset[str]

    async def chat(
        self, body: dict[str, Any], model: str, forward_headers: Mapping[str, str], *,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send an OpenAI chat-completions body (stream or not) and return the raw response,
        whose body is OpenAI-shaped JSON or OpenAI-shaped SSE. ``timeout`` bounds each
        network wait (connect, each read); None means the provider's own timeout.

        Providers with ``"embeddings"`` in ``operations`` also have ``embeddings`` (same
        signature, OpenAI embeddings JSON); with ``"messages"``, ``messages`` (Anthropic
        Messages body in, Anthropic JSON or SSE out, unchanged); and so on for each operation
        it names (``moderations``, ``images``, ``speech``, ``transcriptions``: OpenAI bodies;
        a transcription's ``file`` is a :class:`flaregate.multipart.Upload`).
        ``probe(timeout)`` is an optional cheap health check returning True when the provider
        answers."""


async def probe_models(transport: UpstreamTransport, url: str, headers: Mapping[str, str],
                       timeout: float) -> bool:
    """A cheap health check: ``GET .../models`` answered without a 5xx or a 429."""
    response = await transport.send("GET", url, headers, b"", timeout)
    try:
        await response.read()
    finally:
        await response.aclose()
    return response.status < 500 and response.status != 429
