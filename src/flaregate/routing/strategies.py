"""Routing strategies: the order in which a request tries its route's targets.

Each strategy ranks the targets; the first is tried first and the rest are its fallbacks,
in rank order. Health (circuit, cooldowns) is applied afterwards by the caller, so a
strategy only expresses preference. The performance strategies (latency, least_busy,
cost, score) rank targets that failed recently (``penalized``) after the others, so a
target that fails fast never looks like the fastest or the idlest.

- ``fallback``: the configured order.
- ``weighted``: weighted random order (weights from the route), drawn per request.
- ``latency``: lowest EWMA latency first (time to first token for streams); targets with
  no sample yet come first so they get measured.
- ``least_busy``: fewest in-flight requests first.
- ``cost``: cheapest first, from the target's price per million input/output tokens
  (``input_price_per_1m`` / ``output_price_per_1m``, the budgets' price table) and the
  request's estimated tokens; targets with no price come last.
- ``score``: the seed's load-balance score, highest first:
  ``success rate x 100 - in-flight x 2 + max(0, 1000 - average latency ms)``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

from .health import TargetHealth

DEFAULT_OUTPUT_TOKENS = 256


def estimate_tokens(body: dict[str, Any]) -> tuple[int, int]:
    """(input, output) tokens, roughly: four characters a token, output from max tokens."""
    text = json.dumps(body.get("messages") or body.get("input") or "", default=str)
    output = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_OUTPUT_TOKENS
    return len(text) // 4 + 1, output if isinstance(output, int) and output > 0 else DEFAULT_OUTPUT_TOKENS


def load_balance_score(h: TargetHealth) -> float:
    latency = h.latency_ms if h.latency_ms is not None else 0.0
    return h.success_rate * 100 - h.in_flight * 2 + max(0.0, 1000 - latency)


def _weighted_order(indices: list[int], weights: Sequence[float], rng: random.Random) -> list[int]:
    # Efraimidis-Spirakis: key = u^(1/w); sorting by key draws without replacement by weight.
    keyed = []
    for i in indices:
        w = weights[i]
        keyed.append((rng.random() ** (1 / w) if w > 0 else -1.0, -i))
    return [-i for _, i in sorted(keyed, reverse=True)]


def rank(strategy: str, targets: Sequence[Any], healths: Sequence[TargetHealth], *,
         stream: bool, body: dict[str, Any], rng: random.Random,
         penalized: frozenset[int] = frozenset()) -> list[int]:
    """Indices of ``targets`` in the order to try them."""
    indices = list(range(len(targets)))
    if strategy == "weighted":
        return _weighted_order(indices, [t.weight for t in targets], rng)
    key: Callable[[int], Any]
    if strategy == "latency":
        def key(i: int) -> Any:
            h = healths[i]
            sample = h.ttft_ms if stream and h.ttft_ms is not None else h.latency_ms
            return (sample is not None, sample or 0.0, i)
    elif strategy == "least_busy":
        def key(i: int) -> Any:
            return (healths[i].in_flight, i)
    elif strategy == "cost":
        tokens_in, tokens_out = estimate_tokens(body)

        def key(i: int) -> Any:
            t = targets[i]
            if t.price_in is None and t.price_out is None:
                return (1, 0.0, i)
            return (0, (t.price_in or 0.0) * tokens_in + (t.price_out or 0.0) * tokens_out, i)
    elif strategy == "score":
        def key(i: int) -> Any:
            return (-load_balance_score(healths[i]), i)
    else:  # fallback
        return indices
    return sorted(indices, key=lambda i: (i in penalized, key(i)))
