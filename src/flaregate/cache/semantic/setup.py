"""Builds the semantic cache when a route turns it on, or refuses the start naming the field."""

from __future__ import annotations

from ...config import ConfigError, Settings
from ...ports import Ports
from ...routing.routes import Router
from ...routing.upstream_call import UpstreamCaller
from .embeddings import Embeddings
from .layer import SemanticCache
from .settings import EMBEDDED


def build_semantic_cache(settings: Settings, ports: Ports, router: Router,
                         upstream: UpstreamCaller) -> SemanticCache | None:
    routes = settings.cache.route_semantic
    if not routes:
        return None  # off by default: nothing built, nothing per request
    if ports.semantic_index is None:
        raise ConfigError("semantic_cache: this host has no semantic index")
    for alias, semantic in routes.items():
        if semantic.embeddings == EMBEDDED and ports.embedder is None:
            raise ConfigError(f"FLAREGATE_ROUTES: route {alias!r}: semantic_cache.embeddings \"embedded\" needs "
                              "the standalone server's model; on the Worker name an embeddings route")
    embed = Embeddings(router, upstream, ports.embedder)
    return SemanticCache(dict(routes), ports.semantic_index, embed, ports.cache, ports.clock, ports.tasks)
