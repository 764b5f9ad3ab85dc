"""The response cache: the key specification, the three tiers (hot: the in-process LRU;
warm: the Cache API / the local store's short table; cold: KV / the local store),
per-request controls, namespaces, single-flight, warming and the admin endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .admin import CacheAdmin
    from .controls import CacheDirectives
    from .layer import CacheLayer, CachePlan
    from .lru import MemoryLRU
    from .namespaces import NamespaceGenerations
    from .predictive import PredictiveWarmer
    from .single_flight import SingleFlight
    from .store import ResponseCache, TierLifetimes, cache_key
    from .warming import CacheWarming

_EXPORTS = {
    "CacheLayer": "layer",
    "CachePlan": "layer",
    "CacheAdmin": "admin",
    "ResponseCache": "store",
    "cache_key": "store",
    "MemoryLRU": "lru",
    "NamespaceGenerations": "namespaces",
    "SingleFlight": "single_flight",
    "CacheDirectives": "controls",
    "TierLifetimes": "store",
    "CacheWarming": "warming",
    "PredictiveWarmer": "predictive",
}
__all__ = ["CacheLayer", "CachePlan", "CacheAdmin", "ResponseCache", "cache_key", "MemoryLRU", "NamespaceGenerations", "SingleFlight", "CacheDirectives",
           "TierLifetimes", "CacheWarming", "PredictiveWarmer"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
