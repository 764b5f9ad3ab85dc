"""What the operator sees: analytics events, the metrics hub object and its store, logs,
Prometheus, tracing, the profiler, the health score, alerts and the operator endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .alerts import Alerts
    from .analytics import Analytics
    from .endpoints import Observability
    from .health_score import health_score
    from .hub import MetricsHub
    from .hub_store import HubStore
    from .logs import configure_logging
    from .operational_events import OperationalEvents
    from .profiler import Profiler
    from .prometheus import Exposition

_EXPORTS = {
    "Analytics": "analytics",
    "MetricsHub": "hub",
    "HubStore": "hub_store",
    "Observability": "endpoints",
    "Profiler": "profiler",
    "Alerts": "alerts",
    "OperationalEvents": "operational_events",
    "Exposition": "prometheus",
    "health_score": "health_score",
    "configure_logging": "logs",
}
__all__ = ["Analytics", "MetricsHub", "HubStore", "Observability", "Profiler", "Alerts", "OperationalEvents", "Exposition", "health_score", "configure_logging"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
