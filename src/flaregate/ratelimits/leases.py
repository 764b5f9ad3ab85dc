"""Leases: an isolate takes N units of a request policy from its object in one call and
spends them itself, so N requests make one rate-limiter call instead of N.

Off unless a policy sets ``lease`` (``RATE_LIMIT_LEASE`` for the default policy). The trade:

- **Taken before spent.** A lease's units are taken from the object before any is spent.
  A lease ends ``LEASE_SECONDS`` after its call was sent, or when its fixed window ends if
  that is sooner, both counted from before the call, so the object's window has not ended
  when the isolate's has: a fixed window never lets more than its limit through. A token
  bucket keeps its rate, but it refills while a lease holds units, so one burst can pass
  its capacity by what refills in ``LEASE_SECONDS`` (per isolate holding one). A sliding log cannot lease: it counts
  units when they are taken, and units spent later could let more through one window than
  it allows.
- **Fewer, at times.** Units one isolate holds are not available to the others, and those
  not spent when a lease ends are not given back: each isolate can hold back up to
  ``lease - 1`` units per lease lifetime. Choose a lease well below the policy's rate per
  second.
- **Headers are the isolate's view**: the object's ``remaining`` when the lease was taken
  plus what this isolate still holds.
- **Near the limit it is exact again.** When the object cannot give a whole lease, the
  request asks for one unit, and the partition asks for single units for one lease lifetime.
- **One lease call at a time per partition.** Requests that arrive while one is in flight
  ask for a single unit instead of waiting for it (on the edge a request must not wait on
  another's I/O); one the object refuses is still admitted if a lease has come back since.

A partition's call is skipped only when every policy counted in it leases. Bounded: at most
``MAX_LEASES`` leases per isolate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..ports import Clock

LEASE_SECONDS = 1.0
MAX_LEASES = 4096


@dataclass(slots=True)
class _Lease:
    left: int  # units this isolate may still spend
    ends: float  # on the isolate's monotonic clock
    at: float  # the object's time of the call that took it
    result: dict[str, Any]  # the object's answer for the row then

    def view(self) -> dict[str, Any]:
        return {**self.result, "remaining": self.result["remaining"] + self.left,
                "used": max(0, self.result["used"] - self.left)}


class LeaseBook:
    """The leases of one isolate, by (partition, row). No method awaits: each is atomic."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._single_until: dict[str, float] = {}  # partition -> asks for one unit until then
        self._asking: set[str] = set()  # partitions with a lease call in flight

    def spend(self, partition: str, rows: Sequence[str]) -> tuple[float, list[dict[str, Any]]] | None:
        """One unit from each row's lease, or None (nothing taken) when any has none left."""
        now = self._clock.monotonic()
        leases = [self._leases.get((partition, row)) for row in rows]
        live = [lease for lease in leases if lease is not None and lease.left >= 1 and lease.ends > now]
        if len(live) != len(leases):
            return None
        for lease in live:
            lease.left -= 1
        return max(lease.at for lease in live), [lease.view() for lease in live]

    def size(self, partition: str, lease: int) -> int:
        """Units to ask the object for: the lease, or one while the partition runs low or
        another request's lease call is in flight."""
        if partition in self._asking:
            return 1
        until = self._single_until.get(partition)
        if until is not None:
            if until > self._clock.monotonic():
                return 1
            del self._single_until[partition]
        return lease

    def asking(self, partition: str, flying: bool) -> None:
        """Mark the partition's lease call as in flight, or as back."""
        if flying:
            self._asking.add(partition)
        else:
            self._asking.discard(partition)

    def run_low(self, partition: str) -> None:
        """The object could not give a whole lease: ask for single units for a while."""
        self._single_until[partition] = self._clock.monotonic() + LEASE_SECONDS
        self._bound(self._single_until)

    def grant(self, partition: str, row: str, size: int, at: float, result: dict[str, Any], sent: float,
              fixed_window: bool) -> dict[str, Any]:
        """Keep the ``size - 1`` units a call took beyond this request's; returns the row's
        view. ``sent``: when the call was sent, on the monotonic clock."""
        ends = sent + LEASE_SECONDS
        if fixed_window:
            ends = min(ends, sent + float(result["reset_seconds"]))
        lease = self._leases.get((partition, row))
        if lease is not None and lease.ends > self._clock.monotonic():
            # Two calls raced for this row: keep both leases' units, until the earlier end.
            lease.left += size - 1
            lease.ends = min(lease.ends, ends)
            lease.at, lease.result = at, result
        else:
            lease = self._leases[(partition, row)] = _Lease(size - 1, ends, at, result)
            self._bound(self._leases)
        return lease.view()

    def give_back(self, partition: str, row: str) -> dict[str, Any] | None:
        """Return one unit this isolate spent (its request was refused elsewhere)."""
        lease = self._leases.get((partition, row))
        if lease is None:
            return None
        lease.left += 1
        return lease.view()

    def forget(self, partition: str) -> None:
        """Drop the partition's leases (its rows were reset)."""
        for key in [k for k in self._leases if k[0] == partition]:
            del self._leases[key]
        self._single_until.pop(partition, None)

    def _bound(self, table: dict[Any, Any]) -> None:
        if len(table) > MAX_LEASES:
            table.clear()  # units dropped are units held back: never more let through
