"""Soft budget thresholds: when a budget's spend this period reaches a fraction of its limit
(``BUDGET_ALERT_AT``, 0.8 by default), a ``budget.threshold`` webhook and a hub event of the
same name, once per budget, threshold and period.

Seen on admission, from the budget rows the rate limiter answered with (what is reserved
counts: an alert is a warning, so it may come from an estimate the settlement later
lowers). Once per period across every isolate and replica: the first isolate to see a
crossing claims it in the security store (its one-use nonces, ``nonces.use``, kept until
the period ends), and only the claim's winner sends. Each isolate asks at most once per
budget, threshold and period; requests below every threshold do no work here beyond a
division per budget row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..ports import BackgroundTasks, Clock, SecurityStoreClient
from ..security.webhooks import WebhookDispatcher
from .algorithms.fixed_window import bounds

log = logging.getLogger("flaregate.ratelimits")

EVENT = "budget.threshold"
HUB_EVENT = "budget_threshold"
_MEMO_LIMIT = 10_000


class BudgetThresholds:
    def __init__(self, fractions: Sequence[float], store: SecurityStoreClient | None, tasks: BackgroundTasks,
                 webhooks: WebhookDispatcher | None, analytics: Any, clock: Clock) -> None:
        self._fractions = sorted(f for f in fractions if 0 < f < 1)
        self._store = store
        self._tasks = tasks
        self._webhooks = webhooks
        self._analytics = analytics
        self._clock = clock
        self._seen: set[str] = set()  # (budget row, threshold, period) this isolate has handled

    @property
    def enabled(self) -> bool:
        return bool(self._fractions)

    def observe(self, partition: str, wire: dict[str, Any], result: dict[str, Any]) -> None:
        """One budget row as admission left it; raises the alert of a threshold it has reached."""
        limit = float(result.get("limit") or 0)
        if limit <= 0:
            return
        used = float(result.get("used") or 0)
        reached = [f for f in self._fractions if used >= f * limit]
        if not reached:
            return
        fraction = reached[-1]  # the highest reached: a jump past two thresholds sends the higher
        start, end = bounds(self._clock.now(), wire.get("window_seconds"), wire.get("calendar"))
        claim = f"budget-alert|{partition}|{result['key']}|{fraction:g}|{start:.0f}"
        if claim in self._seen:
            return
        if len(self._seen) >= _MEMO_LIMIT:
            self._seen.clear()
        self._seen.add(claim)
        holder, _, holder_id = partition.partition(":")
        payload = {"scope": holder, f"{holder}_id": holder_id, "budget": wire["name"], "threshold": fraction,
                   "used": result["used"], "limit": result["limit"], "unit": wire["unit"],
                   "period_start": start, "period_end": end}
        self._tasks.run(self._raise(claim, end, payload))

    async def _raise(self, claim: str, period_end: float, payload: dict[str, Any]) -> None:
        if self._store is not None:
            try:
                first = await self._store.call("nonces.use", {"nonce": claim, "expires_at": period_end + 86400})
            except Exception:
                log.warning("could not claim the budget alert %s; not sent", claim, exc_info=True)
                return
            if not first:
                return  # another isolate or replica sent it this period
        if self._webhooks is not None:
            self._webhooks.emit(EVENT, payload)
        self._analytics.record({"type": HUB_EVENT, "ts": self._clock.now(), **payload})
