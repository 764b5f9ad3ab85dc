"""Where a request goes: routes and strategies, health and circuit breakers, probes, and the
upstream caller (retries, failover, deadlines) with its resilience settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .health import HealthRegistry
    from .probes import HealthProber
    from .resilience import ResiliencePolicy
    from .routes import Router, Target
    from .strategies import rank
    from .upstream_call import UpstreamCaller

_EXPORTS = {
    "Router": "routes",
    "Target": "routes",
    "UpstreamCaller": "upstream_call",
    "HealthRegistry": "health",
    "HealthProber": "probes",
    "ResiliencePolicy": "resilience",
    "rank": "strategies",
}
__all__ = ["Router", "Target", "UpstreamCaller", "HealthRegistry", "HealthProber", "ResiliencePolicy", "rank"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
