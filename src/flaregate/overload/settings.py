"""The load-shedding settings (``LOAD_SHEDDING``, ``SHED_*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator


class SheddingSettings(BaseModel):
    """Load shedding (overload/): an adaptive limit on in-flight upstream requests per process
    or isolate; over a priority's share of it, requests get 503 ``overloaded`` at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    initial_limit: int = Field(default=64, ge=1)
    min_limit: int = Field(default=4, ge=1)
    max_limit: int = Field(default=1000, ge=1)
    slow_after_seconds: PositiveFloat = 10.0  # an upstream answer slower than this backs the limit off

    @model_validator(mode="after")
    def _ordered(self) -> SheddingSettings:
        if not self.min_limit <= self.max_limit:
            raise ValueError("SHED_MIN_LIMIT must not exceed SHED_MAX_LIMIT")
        return self
