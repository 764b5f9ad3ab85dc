"""The Worker's main module. The runtime finds the entrypoint and the Durable Object classes
as top-level names here. Imports only: no I/O or entropy at import time (snapshot)."""

from typing import Any

from workers import WorkerEntrypoint

from durable_objects.batch_lane import BatchLane
from durable_objects.batch_store import BatchStore
from durable_objects.metrics_hub import MetricsHub
from durable_objects.rate_limiter import RateLimiter
from durable_objects.security_store import SecurityStore
from durable_objects.semantic_index import SemanticIndex
from flaregate.hosts.edge.worker import handle_fetch


class Default(WorkerEntrypoint):
    async def fetch(self, request: Any) -> Any:
        return await handle_fetch(request, self.env, self.ctx)


__all__ = ["BatchLane", "BatchStore", "Default", "MetricsHub", "RateLimiter", "SecurityStore", "SemanticIndex"]
