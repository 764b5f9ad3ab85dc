"""Tokens and cost: an estimate before the upstream call, the real figures after it (for
rate limits and budgets, conditional routes, analytics and the endpoints alike).

The estimate is deliberately on the high side (reserving too much is refunded a moment
later; reserving too little lets a burst through): prompt text at ~4 characters a token,
plus the completion the request allows (``max_completion_tokens`` / ``max_tokens``, else
``DEFAULT_COMPLETION_TOKENS``), times ``n``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .routing.settings import WILDCARD_ROUTE, RouteTarget

CHARS_PER_TOKEN = 4
DEFAULT_COMPLETION_TOKENS = 256
MAX_TOKENS = 10_000_000
_SNIFF_BYTES = 8192  # the usage chunk is the last event before [DONE]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS:
        return value
    return None


def estimate_tokens(body: Mapping[str, Any]) -> Usage:
    prompt_text = json.dumps([body.get("messages"), body.get("tools")], separators=(",", ":"), default=str)
    prompt = math.ceil(len(prompt_text) / CHARS_PER_TOKEN)
    allowed = _count(body.get("max_completion_tokens")) or _count(body.get("max_tokens")) or DEFAULT_COMPLETION_TOKENS
    n = _count(body.get("n"))
    return Usage(prompt, allowed * (n if n and n <= 128 else 1))


def usage_from(payload: Any) -> Usage | None:
    """The ``usage`` of an OpenAI completion (or stream chunk), when it has a sane one."""
    usage = payload.get("usage") if isinstance(payload, Mapping) else None
    if not isinstance(usage, Mapping):
        return None
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    return Usage(prompt, completion)


class StreamUsage:
    """Finds the usage chunk of an SSE stream (sent when the client asked for
    ``stream_options.include_usage``) by keeping only the stream's tail."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk)[-_SNIFF_BYTES:]

    def usage(self) -> Usage | None:
        found = None
        for line in self._tail.split(b"\n"):
            if line.startswith(b"data:") and b'"usage"' in line:
                try:
                    found = usage_from(json.loads(line[5:])) or found
                except ValueError:
                    continue
        return found


class PriceTable:
    """USD per 1M tokens for each route target (``input_price_per_1m``, ``output_price_per_1m``)."""

    def __init__(self, routes: Mapping[str, Iterable[RouteTarget]]) -> None:
        self._routes = {alias: tuple(targets) for alias, targets in routes.items()}

    def _targets(self, model: str) -> tuple[RouteTarget, ...]:
        return self._routes.get(model) or self._routes.get(WILDCARD_ROUTE) or ()

    @staticmethod
    def _price(target: RouteTarget, usage: Usage) -> float:
        return (usage.prompt_tokens * (target.input_price_per_1m or 0.0)
                + usage.completion_tokens * (target.output_price_per_1m or 0.0)) / 1_000_000

    @property
    def priced(self) -> bool:
        return any(t.input_price_per_1m or t.output_price_per_1m for ts in self._routes.values() for t in ts)

    def prices_model(self, model: str) -> bool:
        """Whether any target of the route for ``model`` has a price."""
        return any(t.input_price_per_1m or t.output_price_per_1m for t in self._targets(model))

    def estimate(self, model: str, usage: Usage) -> float:
        """The dearest target of the route: failover may land on any of them."""
        return max((self._price(t, usage) for t in self._targets(model)), default=0.0)

    def cost(self, model: str, provider: str, upstream_model: str, usage: Usage) -> float:
        """What the target that answered charges for ``usage``."""
        targets = [t for t in self._targets(model) if t.provider == provider]
        exact = [t for t in targets if (t.model or model) == upstream_model]
        chosen = (exact or targets)[:1]
        return self._price(chosen[0], usage) if chosen else self.estimate(model, usage)
