"""Admin endpoints of the cache: purge by key hash or by namespace, and statistics.

``POST /admin/cache/purge`` with ``{"key": "<64 hex>"}`` (the hash a debug header shows)
deletes that entry from every tier; ``{"namespace": "ns"}`` starts a new generation of the
namespace, which makes every entry in it unreachable at once (see cache_namespaces).
``GET /admin/cache/stats`` reports this process's (or isolate's) tiers and counters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ..errors import GatewayError, bad_request
from ..http import Request, Response, json_response
from ..routes import Route
from ..security.admin import require_admin
from .layer import CacheLayer
from .namespaces import NAMESPACE_PATTERN
from .store import store_key

log = logging.getLogger("flaregate.cache")


def _store_down() -> GatewayError:
    return GatewayError(503, "The cache store is unreachable; nothing was purged.", type="api_error",
                        code="cache_store_unavailable")


class CacheAdmin:
    def __init__(self, layer: CacheLayer, extra_stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self._layer = layer
        self._extra_stats = extra_stats

    def routes(self) -> list[Route]:
        return [Route("/admin/cache/purge", {"POST": self.purge}, "admin",
                      "Purge one cache entry (by key hash) or a whole namespace"),
                Route("/admin/cache/stats", {"GET": self.stats}, "admin", "This process's cache tiers and counters")]

    async def purge(self, request: Request, out: dict[str, str]) -> Response:
        require_admin(request, self._layer.settings)
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise bad_request("We could not parse the JSON body of your request.", code="invalid_json") from None
        if not isinstance(body, dict) or len(body.keys() & {"key", "namespace"}) != 1 or len(body) != 1:
            raise bad_request('Send exactly one of {"key": "<key hash>"} or {"namespace": "<namespace>"}.',
                              code="invalid_purge_request")
        if "key" in body:
            key = store_key(body["key"])
            if key is None:
                raise bad_request("'key' must be a cache key hash: 64 lower-case hex digits.", param="key",
                                  code="invalid_value")
            try:
                await self._layer.cache.delete(key)
            except Exception:
                log.warning("cache purge by key failed", exc_info=True)
                raise _store_down() from None
            return json_response({"purged": {"key": body["key"]}})
        namespace = body["namespace"]
        if not isinstance(namespace, str) or not NAMESPACE_PATTERN.match(namespace):
            raise bad_request("'namespace' must be 1 to 64 of A-Z a-z 0-9 _ . : -", param="namespace",
                              code="invalid_value")
        try:
            generation = await self._layer.namespaces.bump(namespace)
        except Exception:
            log.warning("cache purge by namespace failed", exc_info=True)
            raise _store_down() from None
        return json_response({"purged": {"namespace": namespace, "generation": generation}})

    async def stats(self, request: Request, out: dict[str, str]) -> Response:
        require_admin(request, self._layer.settings)
        return json_response({**self._layer.stats(), **(self._extra_stats() if self._extra_stats else {})})
