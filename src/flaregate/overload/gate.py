"""The gateway's side of load shedding: whose priority a request has, and the 503 it gets.

Priority comes from a stored key's ``priority``; a configured key (one the operator put in
``FLAREGATE_API_KEYS``) may instead name it per request with ``x-flaregate-priority``. Any
other caller's header is ignored, so a client cannot promote itself. The gateway asks for a
permit only for a cache miss, right before the upstream call: cache hits are never shed.
"""

from __future__ import annotations

from ..errors import GatewayError
from ..http import Headers
from ..security.access import Principal
from .limit import AimdLimit
from .settings import SheddingSettings
from .shedder import LoadShedder, Permit, Priority

PRIORITY_HEADER = "x-flaregate-priority"


def priority_of(principal: Principal, headers: Headers) -> Priority:
    if principal.policy.priority is not None:
        return Priority.parse(principal.policy.priority)
    if principal.source == "config":
        return Priority.parse(headers.get(PRIORITY_HEADER))
    return Priority.NORMAL


class ShedGate:
    def __init__(self, settings: SheddingSettings) -> None:
        self.enabled = settings.enabled
        self.shedder = LoadShedder(AimdLimit(
            initial=settings.initial_limit, min_limit=settings.min_limit, max_limit=settings.max_limit,
            slow_after_seconds=settings.slow_after_seconds))

    def admit(self, principal: Principal, headers: Headers, now: float) -> Permit | None:
        """A permit to go upstream (None when shedding is off); raise 503 over the limit."""
        if not self.enabled:
            return None
        priority = priority_of(principal, headers)
        permit = self.shedder.try_acquire(priority, now=now)
        if permit is None:
            raise GatewayError(
                503, f"The gateway is overloaded: {priority.name.lower()}-priority requests are "
                     "refused until load drops. Retry later.", type="api_error", code="overloaded",
                headers={"retry-after": str(self.shedder.retry_after_seconds)})
        return permit

    def snapshot(self) -> dict[str, object]:
        return {"enabled": self.enabled, **self.shedder.snapshot()}
