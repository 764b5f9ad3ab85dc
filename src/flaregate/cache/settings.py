"""The response cache's settings (``CACHE_*``, and a route's ``cache_ttl_seconds`` and
``cache_key_tags`` in ``FLAREGATE_ROUTES``) beyond its default TTL; see docs/cache.md."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from .semantic.settings import SemanticCacheSettings

_TagName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class CacheSettings(BaseModel):
    """The response cache beyond its default TTL (``cache_ttl_seconds``); see docs/cache.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_ttl_seconds: int = Field(default=30 * 86400, ge=1)  # per-request TTLs are clamped to this
    memory_max_entries: int = Field(default=1000, ge=0)  # 0 turns the in-process tier off
    memory_max_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    # The tiers' lifetimes (the seed's retention: hot 5 min, warm 1 h, cold 24 h); 0 turns a
    # tier off. Hot bounds how long another edge isolate can serve an entry purged by key.
    hot_ttl_seconds: int = Field(default=300, ge=0)
    warm_ttl_seconds: int = Field(default=3600, ge=0)
    cold_ttl_seconds: int = Field(default=86400, ge=0)
    hot_promote_hits: int = Field(default=2, ge=1)  # lower-tier hits in a hot window that promote to hot
    warm_concurrency: int = Field(default=4, ge=1, le=64)  # upstream calls of one warming job at a time
    predictive_warming: bool = False  # re-warm the most-hit entries before they expire
    predictive_top_n: int = Field(default=20, ge=1, le=1000)
    predictive_interval_seconds: int = Field(default=60, ge=1)
    max_entry_bytes: int = Field(default=1_000_000, ge=1024)
    skip_length_finish: bool = True  # never store answers cut by max_tokens
    single_flight: bool = True  # identical concurrent requests share one upstream call
    route_ttl_seconds: dict[str, int] = {}  # model alias -> default TTL (0: no cache on that route)
    # model alias -> the request tags that are part of its cache key (none by default)
    route_key_tags: dict[str, tuple[_TagName, ...]] = {}
    # model alias -> its semantic cache (none by default): cache/semantic/settings.py
    route_semantic: dict[str, SemanticCacheSettings] = {}

    @field_validator("route_ttl_seconds")
    @classmethod
    def _non_negative(cls, ttls: dict[str, int]) -> dict[str, int]:
        for alias, ttl in ttls.items():
            if ttl < 0:
                raise ValueError(f"route {alias!r}: cache_ttl_seconds must be >= 0")
        return ttls
