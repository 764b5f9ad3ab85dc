"""Leases: an isolate takes several requests' worth of a partition's limits from its object
in one call and spends them itself, so many requests make one rate-limiter call (one
Durable Object request) instead of one each.

**On by default, adaptive.** A policy's ``lease`` unset (``RATE_LIMIT_LEASE`` unset for
``default``) leaves the size to the gateway; ``0`` asks the object on every request; ``N``
caps a lease at N requests. A partition's call is skipped only when every policy counted
in it leases; request, token and USD policies all do.

**Sizing.** The isolate asks for twice the requests it sent the partition in the last
``LEASE_SECONDS`` (none for a first or lone request; capped by the policies' ``lease``).
The object is the authority (``limiter.py``): it lends only when the whole call is
admitted, the same number of requests' worth in every row of the call, and never more than
``1 / LEASE_SHARE`` of what each row has left after the call. Large while the partition is
far from its limit, nothing once a row has fewer than ``LEASE_SHARE`` requests' worth left:
the last units of a window are decided one at a time by the object.

**Tokens and USD.** A lease of N requests also lends N x this request's estimate of tokens
(and of price) from the token limits and budgets of the partition. Each request spends its
own estimate from it; settling is local: real usage below the estimate goes back into the
lease, above it is charged to the lease, and what the lease cannot cover goes to the object
at once (a reconcile call, as without a lease). So leases add no overshoot: a token limit
or budget is passed only by the real usage above the estimates of requests admitted and
not yet settled, exactly as without leases, and never when the estimate is an upper bound
(``max_tokens`` set, and a prompt estimate of characters / 4 not below the real count).
A held lease is spent whatever the object's state (its money was reserved); a call that
fails falls to the policy's ``failure_mode`` as before (a budget failing closed: 503).

**Bounds: never more than one call per request would admit.** Units are taken from the
object before they are spent, and

- a lease ends ``lease_seconds`` (the object's answer, at most ``LEASE_SECONDS``) after its
  call was sent, and a fixed window's never after that window ends: a fixed window never
  lets more than its limit through;
- a token bucket counts lent units as held until the isolate says the lease is over (with
  its next call) or ``HELD_SECONDS`` have passed, and refills only up to capacity minus
  them, so bucket and leases together never hold more than capacity: over any interval T
  at most ``capacity + refill x T`` pass, as without leases;
- a sliding log logs lent units at the moment their lease ends, never before one is
  spent: no interval of ``window_seconds`` admits more than its limit. (Its leases are
  short, ``window / 20`` at most, since units logged after them count that much longer.)

**Fewer, at times.** Units one isolate holds are not available to the others. What a lease
did not spend goes back to the object on the isolate's next call to that partition
(carried by that call: no call of its own), and so do refunds settled after their lease
ended: into a fixed window while it lasts, a bucket within ``HELD_SECONDS`` of the lending,
a sliding log while the entry is in its window. An isolate that never calls again (evicted)
keeps what it held spent: at most one lease per isolate and partition, and near the limit
leases are small. With one isolate (``wrangler dev``, one local process) every unit it
holds goes to its next requests or back: a burst admits exactly the limit.
(``bench/limiter_sim.py`` shows the rest: calls per second for one busy key, K isolates.)

**Headers are the isolate's view**: the object's answer when the lease was taken plus what
this isolate still holds. The admin usage view counts lent units as used until they come
back; the isolate answering it gives back its own first (``Limits.usage``).

**One lease call at a time per partition.** Requests that arrive while one is in flight
ask for their own units only (on the edge a request must not wait on another's I/O); one
the object refuses is still admitted if a lease has come back since.

**Refusals repeat in the isolate.** Once the object refuses a request, the isolate refuses
requests with the same rows and no smaller costs itself until the object's ``retry_after``
(for a token bucket at least a quarter of its time to refill from empty; at most
``LEASE_SECONDS``), after spending any lease it still holds: a key far over a window's
limit does not make a call per refused request. Never more admitted; fewer only when units
come back to the object (other isolates' give-backs, refunds) or a sliding log frees units
before that time is up, and, for a bucket, what refilled during the last hold once traffic
stops. A budget's refusals are not repeated (the client is told the money is gone: that
must come from the object). What this does not remove: a bucket held near empty by a
sustained overload decides its admitted units near one call each (every call finds only a
few refilled units, and near the limit nothing is lent), so with many isolates its object
sees about its refill rate in calls.

Bounded: at most ``MAX_LEASES`` leases and ``MAX_RETURNS`` pending give-backs per isolate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..ports import Clock
from .limiter import HELD_SECONDS, LEASE_SECONDS, LEASE_SHARE, MAX_CHECKS

__all__ = ["HELD_SECONDS", "LEASE_SECONDS", "LEASE_SHARE", "Lease", "LeaseBook"]

MAX_LEASES = 4096
MAX_RETURNS = 4096
GROWTH = 2  # a lease asks for this many times the isolate's recent requests
EPSILON = 1e-9


def with_left(result: dict[str, Any], left: float) -> dict[str, Any]:
    """The object's ``result`` for a row, plus ``left`` units this isolate still holds."""
    if result.get("unit") == "usd":
        return {**result, "remaining": round(result["remaining"] + left, 6),
                "used": max(0.0, round(result["used"] - left, 6))}
    whole = math.floor(left + EPSILON)
    return {**result, "remaining": result["remaining"] + whole, "used": max(0, result["used"] - whole)}


@dataclass(slots=True, eq=False)
class Lease:
    """Units of one row an isolate holds."""

    row: str
    wire: dict[str, Any]  # the policy as the object takes it (to give units back)
    left: float  # units this isolate may still spend
    lent: float  # units the object lent it
    ends: float  # on the isolate's monotonic clock
    at: float  # the object's time of the call that lent it
    result: dict[str, Any]  # the object's answer for the row then
    closed: bool = False  # given back, replaced or dropped: spends nothing more

    def live(self, now: float) -> bool:
        return not self.closed and self.ends > now

    def view(self) -> dict[str, Any]:
        return with_left(self.result, self.left)


class LeaseBook:
    """The leases of one isolate, by partition and row. No method awaits: each is atomic."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._leases: dict[str, dict[str, Lease]] = {}
        self._count = 0
        # partition -> (row, at) -> [policy, units not spent, units lent, refunds since]
        self._returns: dict[str, dict[tuple[str, float], list[Any]]] = {}
        self._pending = 0
        self._rates: dict[str, list[float]] = {}  # partition -> [period, previous, current]
        self._asking: set[str] = set()  # partitions with a lease call in flight
        # (partition, rows) -> (until, costs, answer, when): a refusal this isolate repeats
        self._refusals: dict[tuple[str, tuple[str, ...]], tuple[float, tuple[float, ...], dict[str, Any], float]] = {}

    # -- sizing ----------------------------------------------------------------------------
    def seen(self, partition: str) -> float:
        """Count a request to ``partition``; returns the requests before it in the last
        ``LEASE_SECONDS`` (the previous period's count, weighted by how much of it is inside)."""
        now = self._clock.monotonic()
        period = math.floor(now / LEASE_SECONDS)
        rate = self._rates.get(partition)
        if rate is None:
            if len(self._rates) >= MAX_LEASES:
                self._rates.clear()
            rate = self._rates[partition] = [period, 0.0, 0.0]
        elif rate[0] != period:
            rate[1] = rate[2] if rate[0] == period - 1 else 0.0
            rate[0], rate[2] = period, 0.0
        inside = 1.0 - (now / LEASE_SECONDS - period)
        recent = rate[1] * inside + rate[2]
        rate[2] += 1
        return recent

    def want(self, partition: str, recent: float, most: int) -> int:
        """Requests' worth to ask for beyond this request's: none while another lease call
        of the partition is in flight."""
        if partition in self._asking:
            return 0
        return max(0, min(most, math.floor(GROWTH * recent + EPSILON)))

    def asking(self, partition: str, flying: bool) -> None:
        """Mark the partition's lease call as in flight, or as back."""
        if flying:
            self._asking.add(partition)
        else:
            self._asking.discard(partition)

    # -- spending --------------------------------------------------------------------------
    def spend(self, partition: str, needs: Sequence[tuple[str, float]]) -> list[Lease] | None:
        """Take each (row, cost) from the row's lease, or nothing when any cannot give it."""
        rows = self._leases.get(partition)
        if not rows:
            return None
        now = self._clock.monotonic()
        leases = []
        for row, cost in needs:
            lease = rows.get(row)
            if lease is None or not lease.live(now) or lease.left < cost - EPSILON:
                return None
            leases.append(lease)
        for lease, (_, cost) in zip(leases, needs, strict=True):
            lease.left = max(0.0, lease.left - cost)
        return leases

    def grant(self, partition: str, row: str, wire: dict[str, Any], lent: float, seconds: float, at: float,
              result: dict[str, Any], sent: float) -> Lease:
        """Keep the ``lent`` units a call took beyond this request's. ``sent``: when the
        call was sent, on the monotonic clock (the lease's lifetime counts from there)."""
        old = (self._leases.get(partition) or {}).get(row)
        if old is not None:  # normally already given back by the call that lent this one
            self._close(partition, old)
        if self._count >= MAX_LEASES:
            self._drop_all()  # units dropped are units held back: never more let through
        lease = self._leases.setdefault(partition, {})[row] = Lease(row, wire, lent, lent, sent + seconds, at, result)
        self._count += 1
        return lease

    # -- refusals --------------------------------------------------------------------------
    def refused(self, partition: str, rows: tuple[str, ...], answer: dict[str, Any]) -> None:
        """The object refused a request with these rows (each result with this request's
        ``cost`` and the row's ``algorithm``): requests with the same rows and costs no lower
        are refused here, without a call, until the object's ``retry_after``, for a token
        bucket at least a quarter of its time to refill from empty (what it refills
        meanwhile waits in it: a quarter of its capacity never overflows an empty bucket),
        at most ``LEASE_SECONDS``. Not a budget's refusal: that one says the money is gone
        (don't retry), which units other isolates hold may belie; and budgets are not what
        makes a partition hot."""
        costs = tuple(float(r.get("cost", 0.0)) for r in answer["results"])
        wait = 0.0
        for r in answer["results"]:
            if not r["allowed"] and r.get("unit") == "usd":
                return
            if not r["allowed"]:
                floor = float(r["window_seconds"]) / LEASE_SHARE if r.get("algorithm") == "token_bucket" else 0.0
                wait = max(wait, float(r["retry_after_seconds"]), floor)
        if wait <= 0:
            return
        if len(self._refusals) >= MAX_LEASES:
            self._refusals.clear()
        now = self._clock.monotonic()
        plain = {**answer, "results": [{k: v for k, v in r.items() if k not in ("cost", "algorithm")}
                                       for r in answer["results"]]}
        self._refusals[(partition, rows)] = (now + min(wait, LEASE_SECONDS), costs, plain, now)

    def refusal(self, partition: str, needs: Sequence[tuple[str, float]]) -> dict[str, Any] | None:
        """The object's refusal of an earlier request like this one, as it stands now."""
        key = (partition, tuple(row for row, _ in needs))
        found = self._refusals.get(key)
        if found is None:
            return None
        until, costs, answer, when = found
        now = self._clock.monotonic()
        if until <= now:
            del self._refusals[key]
            return None
        if any(not r["allowed"] and cost < refused - EPSILON
               for (_, cost), refused, r in zip(needs, costs, answer["results"], strict=True)):
            return None  # a smaller request: it may fit
        elapsed = now - when
        results = [{**r, "retry_after_seconds": round(max(0.0, r["retry_after_seconds"] - elapsed), 3),
                    "reset_seconds": round(max(0.0, r["reset_seconds"] - elapsed), 3)} for r in answer["results"]]
        return {**answer, "results": results}

    # -- settling --------------------------------------------------------------------------
    def refund(self, partition: str, lease: Lease, units: float) -> None:
        """Units a request did not use after all: into its lease while that lasts, else
        back to the object with the partition's next call."""
        if units <= EPSILON:
            return
        if lease.live(self._clock.monotonic()):
            lease.left += units
        else:
            self._give(partition, lease, refund=units)

    def charge(self, lease: Lease, units: float) -> float:
        """Take ``units`` more from the lease; returns what it could not cover."""
        if not lease.live(self._clock.monotonic()):
            return units
        taken = min(lease.left, units)
        lease.left -= taken
        return units - taken

    # -- giving back -----------------------------------------------------------------------
    def give_backs(self, partition: str, replacing: Sequence[str], room: int) -> list[dict[str, Any]]:
        """Entries for the partition's next call: what ended leases (and those of the rows
        in ``replacing``, about to be lent anew) did not spend, and refunds settled since."""
        rows = self._leases.get(partition)
        if rows:
            now = self._clock.monotonic()
            for row, lease in list(rows.items()):
                if row in replacing or not lease.live(now):
                    self._close(partition, lease)
        return self._take_returns(partition, room)

    def close_all(self, partition: str) -> list[dict[str, Any]]:
        """End every lease of the partition; entries giving back all it holds."""
        for lease in list((self._leases.get(partition) or {}).values()):
            self._close(partition, lease)
        return self._take_returns(partition, MAX_CHECKS)

    def forget(self, partition: str) -> None:
        """Drop the partition's leases and give-backs (its rows were reset)."""
        for lease in (self._leases.pop(partition, None) or {}).values():
            lease.closed = True
            self._count -= 1
        self._pending -= len(self._returns.pop(partition, {}))
        for key in [k for k in self._refusals if k[0] == partition]:
            del self._refusals[key]

    def holding(self, partition: str) -> dict[str, float]:
        """Units held per row, in leases and not yet given back (for tests and the simulation)."""
        held: dict[str, float] = {}
        for row, lease in (self._leases.get(partition) or {}).items():
            if not lease.closed:
                held[row] = held.get(row, 0.0) + lease.left
        for (row, _), (_, back, _, refund) in (self._returns.get(partition) or {}).items():
            held[row] = held.get(row, 0.0) + back + refund
        return held

    def _close(self, partition: str, lease: Lease) -> None:
        rows = self._leases.get(partition)
        if rows is not None and rows.get(lease.row) is lease:
            del rows[lease.row]
            self._count -= 1
            if not rows:
                del self._leases[partition]
        if not lease.closed:
            lease.closed = True
            # A bucket also hears of a lease spent to the end: it stops counting it as held.
            if lease.left > EPSILON or (lease.lent > EPSILON and lease.wire.get("algorithm") == "token_bucket"):
                self._give(partition, lease, back=lease.left, lent=lease.lent)
            lease.left = 0.0

    def _give(self, partition: str, lease: Lease, back: float = 0.0, lent: float = 0.0, refund: float = 0.0) -> None:
        if self._pending >= MAX_RETURNS:
            self._returns.clear()  # units not given back stay spent: never more let through
            self._pending = 0
        pending = self._returns.setdefault(partition, {})
        key = (lease.row, lease.at)
        record = pending.get(key)
        if record is None:
            record = pending[key] = [lease.wire, 0.0, 0.0, 0.0]
            self._pending += 1
        record[1] += back
        record[2] += lent
        record[3] += refund

    def _take_returns(self, partition: str, room: int) -> list[dict[str, Any]]:
        pending = self._returns.get(partition)
        if not pending or room <= 0:
            return []
        entries = []
        for key in list(pending)[:room]:
            wire, back, lent, refund = pending.pop(key)
            entry = {"key": key[0], "policy": wire, "cost": 0, "back_at": key[1]}
            for name, value in (("back", back), ("lent", lent), ("refund", refund)):
                if value > EPSILON:
                    entry[name] = value
            entries.append(entry)
        self._pending -= len(entries)
        if not pending:
            del self._returns[partition]
        return entries

    def _drop_all(self) -> None:
        for rows in self._leases.values():
            for lease in rows.values():
                lease.closed = True
        self._leases.clear()
        self._count = 0
