"""Predictive warming (opt-in, ``CACHE_PREDICTIVE_WARMING``): the N entries with the most hits
in the last window are asked again, as a REFRESH charged to the key that read them, before
they expire, so a popular answer never turns into a miss.

What a re-ask needs (the request body, the key, the TTL, the namespace) is only known where
the hit happened, so each process (each edge isolate) keeps it for its own hits, bounded. A
pass runs at most once per ``CACHE_PREDICTIVE_INTERVAL_SECONDS``, started in the background
by the first request after the interval (``ctx.waitUntil`` on the edge): no timer of its own,
so the same code runs on both hosts, and an idle process does nothing.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from ..http import Headers, Request, Response
from ..observability import tracing
from ..ports import Ports
from ..security.access import Principal
from .controls import NAMESPACE_HEADER, TTL_HEADER
from .layer import CachedAnswer, CachePlan

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("flaregate.cache")

Chat = Callable[[Request, dict[str, str], Principal], Awaitable[Response]]
_MAX_RECIPES = 4096


class PredictiveStats(TypedDict):
    enabled: bool
    tracked: int  # recipes kept (requests seen to hit often)
    passes: int
    rewarmed: int


@dataclass(slots=True)
class _Recipe:
    body: bytes
    principal: Principal
    ttl: int
    namespace: str
    expires_at: float
    hits: int = 0


class PredictiveWarmer:
    def __init__(self, settings: Settings, ports: Ports, chat: Chat) -> None:
        policy = settings.cache
        self.enabled = policy.predictive_warming
        self._top_n = policy.predictive_top_n
        self._interval = policy.predictive_interval_seconds
        self._clock = ports.clock
        self._tasks = ports.tasks
        self._chat = chat
        self._recipes: OrderedDict[str, _Recipe] = OrderedDict()
        self._next_pass = self._clock.now() + self._interval
        self._running = False
        self.rewarmed = self.passes = 0

    def saw_hit(self, plan: CachePlan, hit: CachedAnswer, body: dict[str, Any], principal: Principal) -> None:
        if plan.key is None:
            return
        recipe = self._recipes.get(plan.key)
        if recipe is None:
            raw = json.dumps({**body, "stream": False}).encode()  # the key ignores stream
            recipe = self._recipes[plan.key] = _Recipe(raw, principal, plan.ttl, plan.namespace, 0.0)
            while len(self._recipes) > _MAX_RECIPES:
                self._recipes.popitem(last=False)
        recipe.hits += 1
        recipe.expires_at = hit.entry.expires_at
        self._recipes.move_to_end(plan.key)

    def tick(self) -> None:
        """On each request: start a pass in the background once the interval is over."""
        now = self._clock.now()
        if now < self._next_pass or self._running:
            return
        self._next_pass = now + self._interval
        self._running = True
        self._tasks.run(self._pass())

    async def _pass(self) -> None:
        try:
            now = self._clock.now()
            horizon = now + 2 * self._interval  # would expire before the pass after next
            popular = sorted((r for r in self._recipes.items() if r[1].hits > 0), key=lambda r: -r[1].hits)
            for _key, recipe in popular[: self._top_n]:
                if now < recipe.expires_at <= horizon and await self._reask(recipe):
                    recipe.expires_at = self._clock.now() + recipe.ttl
                    self.rewarmed += 1
            for key, recipe in list(self._recipes.items()):  # a new window; forget the dead
                recipe.hits = 0
                if recipe.expires_at <= now:
                    del self._recipes[key]
            self.passes += 1
        finally:
            self._running = False

    async def _reask(self, recipe: _Recipe) -> bool:
        headers = Headers([("content-type", "application/json"), ("cache-control", "no-cache"),
                           (TTL_HEADER, str(recipe.ttl)), (NAMESPACE_HEADER, recipe.namespace)])
        out = {"x-request-id": tracing.request_id(None), "traceparent": tracing.child_traceparent(None)}
        try:
            response = await self._chat(Request("POST", "/v1/chat/completions", headers, recipe.body), out,
                                        recipe.principal)
        except Exception:
            log.warning("predictive cache warming failed", exc_info=True)
            return False
        return response.status == 200

    def stats(self) -> PredictiveStats:
        return {"enabled": self.enabled, "tracked": len(self._recipes), "passes": self.passes,
                "rewarmed": self.rewarmed}
