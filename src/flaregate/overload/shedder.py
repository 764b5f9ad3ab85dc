"""Priority admission against the adaptive limit: low priority is shed first, at once.

Each priority may only fill a share of the limit (partitioned like Netflix's
PartitionedLimit), so when the limit shrinks the lower classes hit their ceiling
first and get 503 `overloaded` instead of queueing; high priority keeps the headroom.
Cache hits never reach here: the gateway asks for a permit only before going upstream.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from flaregate.overload.limit import AimdLimit


class Priority(enum.IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2

    @classmethod
    def parse(cls, value: object) -> Priority:
        """A stored key's or trusted header's value; anything unknown is NORMAL."""
        if isinstance(value, str):
            return cls.__members__.get(value.strip().upper(), cls.NORMAL)
        return cls.NORMAL


_DEFAULT_SHARES: Mapping[Priority, float] = {
    Priority.LOW: 0.5,
    Priority.NORMAL: 0.8,
    Priority.HIGH: 1.0,
}


@dataclass
class Permit:
    _shedder: LoadShedder
    target: str | None
    started: float
    _released: bool = field(default=False)

    def release(self, *, now: float, dropped: bool = False) -> None:
        if self._released:
            return
        self._released = True
        self._shedder._release(self, now=now, dropped=dropped)


class LoadShedder:
    def __init__(
        self,
        limit: AimdLimit,
        *,
        shares: Mapping[Priority, float] | None = None,
        max_in_flight_per_target: Mapping[str, int] | None = None,
        retry_after_seconds: int = 1,
    ) -> None:
        self.limit = limit
        self._shares = dict(shares or _DEFAULT_SHARES)
        self._target_caps = dict(max_in_flight_per_target or {})
        self.retry_after_seconds = retry_after_seconds
        self.in_flight = 0
        self._per_target: dict[str, int] = {}
        self.shed_total: dict[Priority, int] = {p: 0 for p in Priority}

    def try_acquire(
        self, priority: Priority, *, now: float, target: str | None = None
    ) -> Permit | None:
        """A permit, or None: the caller answers 503 overloaded with Retry-After."""
        ceiling = max(1, int(self.limit.current * self._shares.get(priority, 1.0)))
        cap = self._target_caps.get(target) if target is not None else None
        if self.in_flight >= ceiling or (
            cap is not None and self._per_target.get(target or "", 0) >= cap
        ):
            self.shed_total[priority] += 1
            return None
        self.in_flight += 1
        if target is not None:
            self._per_target[target] = self._per_target.get(target, 0) + 1
        return Permit(self, target, now)

    def _release(self, permit: Permit, *, now: float, dropped: bool) -> None:
        self.limit.on_sample(
            latency_seconds=now - permit.started, in_flight=self.in_flight, dropped=dropped
        )
        self.in_flight = max(0, self.in_flight - 1)
        if permit.target is not None:
            left = self._per_target.get(permit.target, 1) - 1
            if left > 0:
                self._per_target[permit.target] = left
            else:
                self._per_target.pop(permit.target, None)

    def snapshot(self) -> dict[str, object]:
        """For metrics and the dashboard: the current limit and shed counts."""
        return {
            "limit": self.limit.current,
            "in_flight": self.in_flight,
            "shed": {p.name.lower(): n for p, n in self.shed_total.items()},
        }
