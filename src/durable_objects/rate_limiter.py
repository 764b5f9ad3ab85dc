"""The RateLimiter Durable Object: one instance per partition (``getByName(name)``): a
gateway key, a client network or a model, each holding that partition's limit rows."""

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

    def acquire(self, checks: list[dict[str, Any]]) -> dict[str, Any]:
        return objects.acquire(self._limiter, checks)

    def reconcile(self, adjustments: list[dict[str, Any]]) -> dict[str, Any]:
        return objects.reconcile(self._limiter, adjustments)

    def usage(self) -> dict[str, Any]:
        return objects.usage(self._limiter)

    def reset(self, policy: str = "") -> dict[str, Any]:
        return objects.reset(self._limiter, policy)
