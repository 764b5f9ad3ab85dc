"""Analytics events: one per API request, sent to the metrics hub in the background."""

from __future__ import annotations

import logging
from typing import Any

from .ports import BackgroundTasks, MetricsHubClient

log = logging.getLogger("flaregate.analytics")


class Analytics:
    def __init__(self, hub: MetricsHubClient, tasks: BackgroundTasks) -> None:
        self._hub = hub
        self._tasks = tasks

    def record(self, event: dict[str, Any]) -> None:
        self._tasks.run(self._publish([event]))

    async def _publish(self, events: list[dict[str, Any]]) -> None:
        try:
            await self._hub.publish(events)
        except Exception:  # the hub never fails a client's request
            log.warning("could not publish analytics events", exc_info=True)
