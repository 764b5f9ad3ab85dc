"""Where the upstream caller's events go: circuit changes, cooldowns and failovers.

Every event goes to the metrics hub through the analytics path (the hub relays events with a
``type`` other than ``request`` to ``/ws`` subscribers as they happen). The kinds webhooks
know also go to webhook subscribers: ``failover`` through :class:`Alerts`, circuit changes
as ``circuit.open`` / ``circuit.close``.
"""

from __future__ import annotations

from typing import Any

from ..security.webhooks import WebhookDispatcher
from .alerts import Alerts
from .analytics import Analytics

_CIRCUIT_WEBHOOKS = {"open": "circuit.open", "closed": "circuit.close"}


def _provider(target: Any) -> str:
    return str(target).split("/", 1)[0]


class OperationalEvents:
    def __init__(self, analytics: Analytics, alerts: Alerts, webhooks: WebhookDispatcher) -> None:
        self._analytics = analytics
        self._alerts = alerts
        self._webhooks = webhooks

    def emit(self, event: dict[str, Any]) -> None:
        self._analytics.record(event)
        kind = event.get("type")
        if kind == "failover":
            self._alerts.failover(str(event.get("model") or ""), _provider(event.get("from")),
                                  _provider(event.get("to")), str(event.get("reason") or ""),
                                  event.get("tags") if isinstance(event.get("tags"), dict) else None)
        elif kind == "circuit" and event.get("to") in _CIRCUIT_WEBHOOKS:
            self._webhooks.emit(_CIRCUIT_WEBHOOKS[event["to"]], {
                "provider": event.get("provider"), "model": event.get("model"), "from": event.get("from"),
                "reason": event.get("reason")})
