"""Namespace generations: purging a whole namespace in O(1) over a plain key-value store.

Each namespace has a generation, folded into every cache key of that namespace. Purging
writes a new generation: old entries are never read again and expire on their own, so no
index of keys is needed (KV offers none that is consistent). The generation lives in the
store under ``fg:cgen:<namespace>`` and is remembered in process for ``refresh_seconds``;
a purge made here is seen here at once, elsewhere (other edge isolates, through KV's own
eventual consistency) within that bound plus KV's propagation delay.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict

from ..ports import Clock, KeyValueStore

log = logging.getLogger("flaregate.cache")

GENERATION_PREFIX = "fg:cgen:"
INITIAL_GENERATION = "0"
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_MAX_REMEMBERED = 1024  # namespaces whose generation is held in memory


class NamespaceStoreError(Exception):
    """The generation could not be read; the caller should not use the cache this time."""


class NamespaceGenerations:
    def __init__(self, store: KeyValueStore, clock: Clock, lifetime_seconds: int,
                 refresh_seconds: float = 10.0) -> None:
        # lifetime > the longest entry TTL: when a generation record expires, every entry
        # written under the generations before it has expired too, so none comes back.
        self._store = store
        self._clock = clock
        self._lifetime = lifetime_seconds
        self._refresh = refresh_seconds
        self._known: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._bumps = 0

    async def current(self, namespace: str) -> str:
        now = self._clock.monotonic()
        known = self._known.get(namespace)
        if known is not None and now - known[1] < self._refresh:
            return known[0]
        try:
            generation = await self._store.get(GENERATION_PREFIX + namespace) or INITIAL_GENERATION
        except Exception as exc:
            if known is not None:  # the last known one is better than no cache at all
                return known[0]
            raise NamespaceStoreError(str(exc)) from None
        self._remember(namespace, generation, now)
        return generation

    async def bump(self, namespace: str) -> str:
        """Start a new generation (raises when the store cannot be written)."""
        self._bumps += 1
        generation = f"{int(self._clock.now() * 1000):x}.{self._bumps}"
        await self._store.put(GENERATION_PREFIX + namespace, generation, self._lifetime)
        self._remember(namespace, generation, self._clock.monotonic())
        return generation

    def _remember(self, namespace: str, generation: str, at: float) -> None:
        self._known[namespace] = (generation, at)
        self._known.move_to_end(namespace)
        while len(self._known) > _MAX_REMEMBERED:
            self._known.popitem(last=False)
