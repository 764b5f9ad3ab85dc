"""Where the semantic cache's embeddings come from: the route the operator names, called
through the gateway's own embeddings path (its targets, retries and failover, any provider
that embeds: OpenAI-kind, Hugging Face, Workers AI), or the host's embedded model."""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Callable
from typing import Any

from ...ports import TextEmbedder
from ...providers.base import EMBEDDINGS
from ...request_event import RequestEvent
from ...routing.routes import Router
from ...routing.upstream_call import UpstreamCaller
from .layer import EmbeddingFailed
from .settings import EMBEDDED

_MAX_EMBEDDING_BYTES = 1 << 20


def _vector(payload: bytes) -> tuple[list[float], int]:
    try:
        answer = json.loads(payload)
        item = answer["data"][0]["embedding"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise EmbeddingFailed("the embeddings answer has no data[0].embedding") from None
    if isinstance(item, str):  # encoding_format "base64": little-endian float32s
        try:
            raw = base64.b64decode(item, validate=True)
            vector = list(struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4]))
        except (binascii.Error, struct.error):
            raise EmbeddingFailed("the embedding is not valid base64 float32") from None
    elif isinstance(item, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in item):
        vector = [float(x) for x in item]
    else:
        raise EmbeddingFailed("the embedding is not a list of numbers")
    if not vector or len(vector) > 8192 or not all(math.isfinite(x) for x in vector):
        raise EmbeddingFailed("the embedding is empty, too long or not finite")
    usage = answer.get("usage") if isinstance(answer, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return vector, tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else 0


class Embeddings:
    """Embeds a prompt for a route's semantic cache: ``embeddings`` names a route, or
    ``"embedded"`` (the host's own model, loaded on first use)."""

    def __init__(self, router: Router, upstream: UpstreamCaller,
                 embedder: Callable[[], TextEmbedder] | None) -> None:
        self._router = router
        self._upstream = upstream
        self._make_embedder = embedder
        self._embedder: TextEmbedder | None = None

    async def __call__(self, route: str, text: str, event: RequestEvent) -> tuple[list[float], int]:
        if route == EMBEDDED:
            if self._embedder is None:
                if self._make_embedder is None:
                    raise EmbeddingFailed("this host has no embedded model")
                self._embedder = self._make_embedder()
            vectors = await self._embedder.embed([text])
            event["semantic_embed_model"] = self._embedder.name
            return vectors[0], 0
        targets = self._router.resolve(route)
        scratch: Any = {}  # the embedding call's own attempts: not the request's
        target, response = await self._upstream.call(targets, {"model": route, "input": text}, {}, scratch,
                                                     operation=EMBEDDINGS, stream=False)
        try:
            payload = await response.read()
        finally:
            await response.aclose()
        if response.status != 200:
            raise EmbeddingFailed(f"the embeddings route answered {response.status}")
        if len(payload) > _MAX_EMBEDDING_BYTES:
            raise EmbeddingFailed("the embeddings answer is too large")
        event["semantic_embed_model"] = f"{target.provider.name}:{target.model or route}"
        return _vector(payload)
