"""The RateLimiter Durable Object: one instance per limit key (``getByName(key)``)."""

from typing import Any

from workers import DurableObject

from flaregate.hosts.edge import objects


class RateLimiter(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self._limiter = objects.rate_limiter(self.ctx)

    # RPC. Synchronous on purpose: no await between read and write keeps each check atomic.
    def check(self, key: str, policy: dict[str, Any], cost: float = 1.0) -> dict[str, Any]:
        return objects.check(self._limiter, key, policy, cost)
