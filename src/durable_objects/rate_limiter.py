"""The RateLimiter Durable Object: one instance per partition (``getByName(name)``): a
gateway key, a client network or a model, each holding that partition's limit rows."""

from typing import Any

from workers import DurableObject

from flaregate.hosts.edge import objects
from flaregate.hosts.edge.rpc import json_method


class RateLimiter(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self._limiter = objects.rate_limiter(self.ctx)

    # RPC, JSON in and out (hosts/edge/rpc.py). Synchronous on purpose: no await between
    # read and write keeps each check atomic.
    @json_method
    def check(self, key: str, policy: dict[str, Any], cost: float = 1.0) -> dict[str, Any]:
        return self._limiter.check(str(key), policy, float(cost))

    @json_method
    def acquire(self, checks: list[dict[str, Any]]) -> dict[str, Any]:
        return self._limiter.acquire(checks)

    @json_method
    def reconcile(self, adjustments: list[dict[str, Any]]) -> dict[str, Any]:
        return self._limiter.reconcile(adjustments)

    @json_method
    def usage(self) -> dict[str, Any]:
        return self._limiter.usage()

    @json_method
    def reset(self, policy: str = "") -> dict[str, Any]:
        return self._limiter.reset(str(policy or ""))
