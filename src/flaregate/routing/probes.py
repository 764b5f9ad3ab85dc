"""Active health probes: recover open circuits without spending a client's request on it.

Each round, every target whose circuit is open and whose cooldown has elapsed gets a
cheap probe of its provider (``GET /models`` for HTTP providers). The probe is the
half-open trial: success closes the circuit, failure opens it for another cooldown.
Closed circuits are left to passive monitoring, so probes never add load to healthy
providers. Locally a background task runs rounds every ``HEALTH_PROBE_INTERVAL_SECONDS``;
on the edge a cron trigger would call :meth:`HealthProber.run_once`, but health lives in
each isolate's memory, so a cron invocation only probes the isolate it lands on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ..ports import UpstreamError
from .health import OPEN
from .upstream_call import UpstreamCaller

log = logging.getLogger("flaregate.probes")


class HealthProber:
    def __init__(self, caller: UpstreamCaller, providers: Mapping[str, Any], timeout: float = 5.0) -> None:
        self._caller = caller
        self._providers = providers
        self._timeout = timeout

    async def _probe(self, provider: Any) -> bool:
        try:
            return bool(await asyncio.wait_for(provider.probe(self._timeout), self._timeout))
        except (TimeoutError, UpstreamError):
            return False

    async def run_once(self) -> int:
        """One round; returns how many targets were probed."""
        health = self._caller.health
        verdicts: dict[str, bool] = {}  # one probe per provider per round
        probed = 0
        for h in health.all():
            provider = self._providers.get(h.provider)
            if h.state != OPEN or health.circuit_wait(h) > 0 or not hasattr(provider, "probe"):
                continue
            health.acquire(h)  # the half-open trial
            try:
                if h.provider not in verdicts:
                    verdicts[h.provider] = await self._probe(provider)
            finally:
                health.release(h)
            probed += 1
            if verdicts[h.provider]:
                health.success(h)
            else:
                health.failure(h, "probe", f"active probe of provider '{h.provider}' failed")
        return probed

    async def run_forever(self, interval: float) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # a probe round must never end the loop
                log.warning("health probe round failed", exc_info=True)
            await asyncio.sleep(interval)
