"""Exact-match response cache over the key-value port.

The key is a SHA-256 over the tenant (gateway key id), the resolved route and the
canonical JSON of the request body, so field order and whitespace never matter and no
tenant reads another's entry. A corrupt entry is a miss and is deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from .ports import KeyValueStore

log = logging.getLogger("flaregate.cache")

KEY_PREFIX = "fg:c1:"
# Fields that never change the completion itself.
_IGNORED_FIELDS = frozenset({"stream", "stream_options"})


def cache_key(tenant: str, route: str, body: dict[str, Any]) -> str:
    canonical = {k: v for k, v in body.items() if k not in _IGNORED_FIELDS}
    material = json.dumps([tenant, route, canonical], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()


class ResponseCache:
    def __init__(self, store: KeyValueStore, ttl_seconds: int) -> None:
        self._store = store
        self.ttl = ttl_seconds

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self._store.get(key)
        except Exception:  # a store that is down degrades to no cache
            log.warning("cache read failed; treating as a miss", exc_info=True)
            return None
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
            if not (isinstance(entry, dict) and isinstance(entry.get("body"), str) and isinstance(entry.get("provider"), str)):
                raise ValueError("bad entry shape")
            json.loads(entry["body"])
        except ValueError:
            log.warning("corrupt cache entry %s deleted", key)
            try:
                await self._store.delete(key)
            except Exception:
                log.warning("could not delete corrupt cache entry", exc_info=True)
            return None
        return entry

    async def put(self, key: str, body: bytes, provider: str) -> None:
        entry = json.dumps({"v": 1, "provider": provider, "body": body.decode()})
        try:
            await self._store.put(key, entry, self.ttl)
        except Exception:
            log.warning("cache write failed", exc_info=True)
