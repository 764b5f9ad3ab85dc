"""Routes as configured (``FLAREGATE_ROUTES``): each model alias, its strategy and its
targets (a provider, the model name sent upstream, a weight, prices, an in-flight cap)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat

WILDCARD_ROUTE = "*"  # the route of every model name no other route names


class RouteTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    model: str | None = None  # None: send the requested model name unchanged
    weight: float = Field(default=1.0, ge=0)  # the "weighted" strategy's share
    # USD per 1 million tokens: for spending budgets and the "cost" strategy (unpriced: free).
    input_price_per_1m: NonNegativeFloat | None = None
    output_price_per_1m: NonNegativeFloat | None = None
    # Upstream calls this target may have open at once (per process / isolate); at the cap
    # it is skipped like one cooling down, falling over to the next target.
    max_in_flight: int | None = Field(default=None, ge=1)


class RouteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["fallback", "weighted", "latency", "least_busy", "cost", "score"] = "fallback"
    targets: tuple[RouteTarget, ...]

    # Read like a tuple of targets, so code written for plain target lists keeps working.
    def __iter__(self) -> Iterator[RouteTarget]:  # type: ignore[override]  # not pydantic's field pairs
        return iter(self.targets)

    def __getitem__(self, index: int) -> RouteTarget:
        return self.targets[index]

    def __len__(self) -> int:
        return len(self.targets)
