"""The semantic cache's settings: a route's ``semantic_cache`` in ``FLAREGATE_ROUTES``
(off unless a route names it); see docs/cache.md, "Semantic cache"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The embeddings "route" that means the standalone server's embedded model (WordLlama).
EMBEDDED = "embedded"
# Chosen from the labelled set's tune half (bench/semantic_eval.py): the highest threshold
# that keeps 70% of its paraphrases with false hits <= 1%, with the embedded model.
DEFAULT_THRESHOLD = 0.80
USER_HEADER = "x-flaregate-end-user"  # who the answer is for, when partitions are scoped by user
OPT_OUT_HEADER = "x-flaregate-semantic-cache"  # "off": exact cache only for this request


class SemanticCacheSettings(BaseModel):
    """One route's semantic cache. ``embeddings``: the route (model alias) whose embeddings
    the prompts go through, or ``"embedded"`` (the standalone server's own model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0.0, le=1.0)
    embeddings: str = Field(default=EMBEDDED, min_length=1, max_length=256)
    max_entries: int = Field(default=10_000, ge=1, le=1_000_000)  # per partition; the oldest go first
    scope_by_user: bool = False  # partitions per end user (USER_HEADER): a key shared by an app's users
    shortlist: int = Field(default=32, ge=1, le=512)  # candidates compared by exact cosine


def check_semantic_route(alias: str, semantic: SemanticCacheSettings, routes: Mapping[str, Any]) -> None:
    """Refuse a semantic cache on an unknown route, or one whose embeddings route is unknown."""
    if alias not in routes:
        raise ValueError(f"semantic_cache for unknown route {alias!r}")
    if semantic.embeddings != EMBEDDED and semantic.embeddings not in routes:
        raise ValueError(f"route {alias!r}: semantic_cache.embeddings names unknown route "
                         f"{semantic.embeddings!r} (a route alias, or \"embedded\")")
    if semantic.embeddings == alias:
        raise ValueError(f"route {alias!r}: semantic_cache.embeddings cannot be the route itself")


def parse_semantic_route(alias: str, raw: Any) -> SemanticCacheSettings:
    """A route's ``semantic_cache`` as written in FLAREGATE_ROUTES; a bad one is refused with
    the field the operator wrote (``route 'chat': semantic_cache.threshold: ...``)."""
    try:
        return SemanticCacheSettings.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(["semantic_cache", *(str(p) for p in err["loc"])])
        raise ValueError(f"route {alias!r}: {where}: {err['msg']}") from None
