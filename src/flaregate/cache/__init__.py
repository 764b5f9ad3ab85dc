"""The response cache: the key specification, the tiers (in-process LRU, then KV / the
local store), per-request controls, namespaces, single-flight and the admin endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .admin import CacheAdmin
    from .controls import CacheDirectives
    from .layer import CacheLayer, CachePlan
    from .lru import MemoryLRU
    from .namespaces import NamespaceGenerations
    from .single_flight import SingleFlight
    from .store import ResponseCache, cache_key

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
}
__all__ = ["CacheLayer", "CachePlan", "CacheAdmin", "ResponseCache", "cache_key", "MemoryLRU", "NamespaceGenerations", "SingleFlight", "CacheDirectives"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
