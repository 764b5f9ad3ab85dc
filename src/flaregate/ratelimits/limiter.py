"""The rate-limiter object: one instance per partition, one row per limit key, state in SQL.

A partition is what the object is named by on the edge (one Durable Object each): a gateway
key (``key:<key id>``), an anonymised client network (``ip:<net>``) or a model
(``model:<name>``). Inside it, each policy and scope combination has its own row, so all
of a key's limits are checked in one call, all or nothing.

Every method is a read-modify-write with no ``await`` inside, so it is atomic both in a
Durable Object (input gates, synchronous SQL) and in the local single-threaded loop. All
arguments and results are plain dicts, lists, strings and numbers: on the edge they cross
Durable Object RPC unchanged. The object's own clock decides; callers never send a time
except an ``at`` this object returned earlier (to reconcile the right window).

Leases (``ratelimits/leases.py``): a check may ask for ``lease`` more requests' worth of its
cost beyond its own. The object is the authority on what it lends: only when the whole call
is admitted, never more than ``1 / LEASE_SHARE`` of what each row has left after the call
(so near the limit nothing, and every last unit is decided here one at a time), and the
same number of requests' worth in every row of the call. A check may also say that a lease
lent by the call at ``back_at`` has ended: ``back`` units it did not spend, ``lent`` what it
was lent, ``refund`` what was refunded to requests it served after it ended.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from ..ports import Clock, SqlStorage
from .algorithms import fixed_window, sliding_window, token_bucket

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rl_state ("
    " key TEXT PRIMARY KEY, policy TEXT NOT NULL, state TEXT NOT NULL, expires_at REAL NOT NULL)"
)
ALGORITHMS = ("token_bucket", "sliding_window", "fixed_window")
UNITS = ("requests", "tokens", "usd")
MAX_CHECKS = 32  # per call; a request applies a handful of policies (and a few give-backs)
MAX_KEY_LENGTH = 512
SWEEP_EVERY = 128  # writes between sweeps of rows that have returned to their fresh state
CACHED_ROWS = 4096  # rows the SQL-backed limiter keeps a copy of in memory
LEASE_SECONDS = 2.0  # the longest a lease lasts (fixed windows: until the window ends, if sooner)
LEASE_SHARE = 4  # a lease takes at most 1/LEASE_SHARE of what a row has left
MAX_GRANT = 10_000  # requests' worth per lease
HELD_SECONDS = 2 * LEASE_SECONDS  # a bucket counts lent units as held this long: time for a give-back
HELD_GRID = HELD_SECONDS / 16  # ... rounded up to this step, so a row holds at most ~17 entries


class _Stored(TypedDict, total=False):
    """A row's state as kept in SQL (JSON); which keys it has is its policy's algorithm's."""

    tokens: float  # token_bucket: what is left, as of updated_at
    updated_at: float
    held: list[list[float]]  # token_bucket: [until, units] lent out and not yet given back
    start: float  # fixed_window: the window's start and what it has used
    used: float
    log: list[list[float]]  # sliding_window: [second, units] taken


class _PolicyRow(TypedDict):
    """A policy as its row keeps it (JSON in SQL; ``Policy.from_dict`` reads it back)."""

    name: str
    algorithm: str
    unit: str
    limit: float
    refill_per_second: float | None
    window_seconds: float | None
    calendar: str | None


class _Report(TypedDict, total=False):
    """One row's decision as a check answers it (and the admin view lists it)."""

    key: str
    policy: str
    unit: str
    allowed: bool
    limit: float | int
    used: float | int
    remaining: float | int
    reset_seconds: float
    retry_after_seconds: float
    window_seconds: float
    exceeds_limit: bool
    leased: float  # when the call lent a lease: the units this row lent, and for how long
    lease_seconds: float
    algorithm: str  # the admin view's rows


class PolicyError(ValueError):
    """A policy or check the object cannot use (it came over RPC: never trust its shape)."""


def _number(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyError(f"{name} must be a finite number")
    if value < 0 or (positive and value == 0):
        raise PolicyError(f"{name} must be {'> 0' if positive else '>= 0'}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    algorithm: str
    unit: str
    limit: float
    refill_per_second: float | None = None
    window_seconds: float | None = None
    calendar: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> Policy:
        if not isinstance(data, Mapping):
            raise PolicyError("policy must be an object")
        algorithm = data.get("algorithm", "token_bucket")
        if algorithm not in ALGORITHMS:
            raise PolicyError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        unit = data.get("unit", "requests")
        if unit not in UNITS:
            raise PolicyError(f"unit must be one of {', '.join(UNITS)}")
        name = data.get("name", "default")
        if not isinstance(name, str) or not name:
            raise PolicyError("name must be a non-empty string")
        # "capacity" is the older name of a bucket's limit.
        limit = _number(data.get("limit", data.get("capacity")), "limit", positive=True)
        refill = window = calendar = None
        if algorithm == "token_bucket":
            refill = _number(data.get("refill_per_second"), "refill_per_second", positive=True)
        elif data.get("calendar") is not None:
            calendar = data["calendar"]
            if algorithm != "fixed_window" or calendar != fixed_window.MONTH:
                raise PolicyError("calendar must be 'month', for a fixed_window")
        else:
            window = _number(data.get("window_seconds"), "window_seconds", positive=True)
        return cls(name, algorithm, unit, limit, refill, window, calendar)

    def as_dict(self) -> _PolicyRow:
        return {"name": self.name, "algorithm": self.algorithm, "unit": self.unit, "limit": self.limit,
                "refill_per_second": self.refill_per_second, "window_seconds": self.window_seconds,
                "calendar": self.calendar}


def _count(value: float, unit: str, up: bool = False) -> float | int:
    """Whole units for requests and tokens (remaining rounds down, used up: a bucket part
    refilled is not yet a whole unit back), micro-dollar precision for USD."""
    if unit == "usd":
        return round(value, 6)
    return max(0, math.ceil(value - 1e-9) if up else math.floor(value + 1e-9))


def _in(prefix: str, name: str) -> str:
    return f"{prefix}|{name}" if prefix and name else prefix or name


class _SqlRows:
    """The rows in SQL, read through a copy in memory: this object is the only writer of
    its table (a Durable Object owns its storage; the local server's limiter is one per
    process), so a row it has read or written stays what SQL holds and a request reads no
    SQL. The copy holds at most ``CACHED_ROWS`` rows; a delete or sweep empties it."""

    def __init__(self, sql: SqlStorage) -> None:
        self._sql = sql
        self._cached: dict[str, tuple[str, str]] = {}
        self.writes = 0
        sql.exec(SCHEMA)

    def get(self, key: str) -> tuple[str, str] | None:
        row = self._cached.get(key)
        if row is not None:
            return row
        rows = self._sql.exec("SELECT policy, state FROM rl_state WHERE key = ?", key)
        if not rows:
            return None
        row = (rows[0]["policy"], rows[0]["state"])
        self._cache(key, row)
        return row

    def put(self, key: str, policy: str, state: str, expires_at: float) -> None:
        self._sql.exec(
            "INSERT INTO rl_state (key, policy, state, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET policy = excluded.policy, state = excluded.state,"
            " expires_at = excluded.expires_at",
            key, policy, state, expires_at,
        )
        self._cache(key, (policy, state))

    def _cache(self, key: str, row: tuple[str, str]) -> None:
        if len(self._cached) >= CACHED_ROWS and key not in self._cached:
            self._cached.clear()  # rows read again from SQL: cheaper than tracking recency
        self._cached[key] = row

    def all(self, prefix: str) -> list[tuple[str, str, str]]:
        """Rows whose key is ``prefix|...`` (every row when prefix is ""), prefix removed."""
        if prefix:
            rows = self._sql.exec("SELECT key, policy, state FROM rl_state WHERE substr(key, 1, ?) = ?"
                                  " ORDER BY key", len(prefix) + 1, prefix + "|")
        else:
            rows = self._sql.exec("SELECT key, policy, state FROM rl_state ORDER BY key")
        skip = len(prefix) + 1 if prefix else 0
        return [(r["key"][skip:], r["policy"], r["state"]) for r in rows]

    def delete(self, name: str) -> int:
        """Delete every row (name ""), or the row ``name`` and the rows ``name|...``."""
        self._cached.clear()
        if not name:
            count = self._sql.exec("SELECT COUNT(*) AS n FROM rl_state")[0]["n"]
            self._sql.exec("DELETE FROM rl_state")
            return int(count)
        where = "key = ? OR substr(key, 1, ?) = ?"
        args = (name, len(name) + 1, name + "|")
        count = self._sql.exec(f"SELECT COUNT(*) AS n FROM rl_state WHERE {where}", *args)[0]["n"]
        self._sql.exec(f"DELETE FROM rl_state WHERE {where}", *args)
        return int(count)

    def sweep(self, now: float) -> None:
        self._cached.clear()
        self._sql.exec("DELETE FROM rl_state WHERE expires_at < ?", now)


class MemoryRows:
    """The same rows in a dict: the in-isolate fallback when the real object is unreachable,
    and what a shared backend loads one partition into (hosts/local/redis_backend.py)."""

    def __init__(self, rows: dict[str, tuple[str, str, float]] | None = None) -> None:
        self._rows: dict[str, tuple[str, str, float]] = dict(rows or {})
        self.writes = 0

    def get(self, key: str) -> tuple[str, str] | None:
        row = self._rows.get(key)
        return (row[0], row[1]) if row else None

    def put(self, key: str, policy: str, state: str, expires_at: float) -> None:
        self._set(key, (policy, state, expires_at))

    def all(self, prefix: str) -> list[tuple[str, str, str]]:
        skip = len(prefix) + 1 if prefix else 0
        return [(k[skip:], v[0], v[1]) for k, v in sorted(self._rows.items())
                if not prefix or k.startswith(prefix + "|")]

    def delete(self, name: str) -> int:
        doomed = [k for k in self._rows if not name or k == name or k.startswith(name + "|")]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    def sweep(self, now: float) -> None:
        for key in [k for k, v in self._rows.items() if v[2] < now]:
            self._drop(key)

    # Subclasses that track changes override these two.
    def _set(self, key: str, row: tuple[str, str, float]) -> None:
        self._rows[key] = row

    def _drop(self, key: str) -> None:
        del self._rows[key]


@dataclass(slots=True)
class _Outcome:
    allowed: bool
    state: _Stored
    used: float
    retry_after: float
    reset_after: float
    window_seconds: float
    expires_at: float
    spare: float  # units the row still has after this decision (what a lease may take a share of)


def _bucket(stored: _Stored | None) -> token_bucket.BucketState | None:
    if not stored:
        return None
    held = tuple((float(until), float(units)) for until, units in stored.get("held", ()))
    return token_bucket.BucketState(float(stored["tokens"]), float(stored["updated_at"]), held)


def _bucket_state(state: token_bucket.BucketState) -> _Stored:
    stored: _Stored = {"tokens": state.tokens, "updated_at": state.updated_at}
    if state.held:
        stored["held"] = [list(entry) for entry in state.held]
    return stored


def _log(stored: _Stored | None) -> sliding_window.SlidingLog | None:
    return sliding_window.SlidingLog(tuple((float(s), float(u)) for s, u in stored["log"])) if stored else None


def _evaluate(policy: Policy, stored: _Stored | None, now: float, cost: float) -> _Outcome:
    """One policy's decision for ``cost`` units; cost 0 is a read-only peek."""
    p = policy
    if p.algorithm == "token_bucket":
        assert p.refill_per_second is not None
        b = token_bucket.take(_bucket(stored), now, p.limit, p.refill_per_second, cost)
        expires = max(now + b.reset_after, b.state.held[-1][0] if b.state.held else now)
        return _Outcome(b.allowed, _bucket_state(b.state), p.limit - b.state.tokens, b.retry_after,
                        b.reset_after, p.limit / p.refill_per_second, expires, max(0.0, b.state.tokens))
    if p.algorithm == "fixed_window":
        window = fixed_window.WindowState(float(stored["start"]), float(stored["used"])) if stored else None
        w = fixed_window.take(window, now, p.limit, cost, p.window_seconds, p.calendar)
        return _Outcome(w.allowed, {"start": w.state.start, "used": w.state.used}, w.state.used,
                        w.retry_after, w.reset_after, w.window_seconds, w.state.start + w.window_seconds,
                        max(0.0, p.limit - w.state.used))
    assert p.window_seconds is not None
    d = sliding_window.take(_log(stored), now, p.limit, p.window_seconds, cost)
    return _Outcome(d.allowed, {"log": [list(e) for e in d.log.entries]}, d.used, d.retry_after,
                    d.reset_after, p.window_seconds, now + d.reset_after, max(0.0, p.limit - d.used))


def _adjusted(
    policy: Policy, stored: _Stored | None, now: float, at: float, delta: float
) -> _Stored | None:
    p = policy
    if p.algorithm == "token_bucket":
        assert p.refill_per_second is not None
        return _bucket_state(token_bucket.adjust(_bucket(stored), now, p.limit, p.refill_per_second, delta))
    if p.algorithm == "fixed_window":
        window = fixed_window.WindowState(float(stored["start"]), float(stored["used"])) if stored else None
        w = fixed_window.adjust(window, now, at, delta, p.window_seconds, p.calendar)
        return {"start": w.start, "used": w.used} if w else None
    assert p.window_seconds is not None
    return {"log": [list(e) for e in sliding_window.adjust(_log(stored), now, p.window_seconds, at, delta).entries]}


def _lease_seconds(policy: Policy, outcome: _Outcome) -> float:
    """How long a lease lent now may be spent: never past a fixed window's end."""
    if policy.algorithm == "fixed_window":
        return min(LEASE_SECONDS, outcome.reset_after)
    if policy.algorithm == "sliding_window":
        assert policy.window_seconds is not None
        return sliding_window.lease_seconds(policy.window_seconds, LEASE_SECONDS)
    return LEASE_SECONDS


def _lend(policy: Policy, outcome: _Outcome, now: float, units: float) -> tuple[_Outcome, float]:
    """Take ``units`` more (they fit: at most ``outcome.spare``) for a lease; the row's
    outcome afterwards, and the seconds the lease may last."""
    p, seconds = policy, _lease_seconds(policy, outcome)
    state: _Stored
    if p.algorithm == "token_bucket":
        bucket = _bucket(outcome.state)
        assert bucket is not None
        until = token_bucket.grid(now + HELD_SECONDS, HELD_GRID)
        state = _bucket_state(token_bucket.lease(bucket, units, until))
    elif p.algorithm == "fixed_window":
        state = {"start": outcome.state["start"], "used": outcome.state["used"] + units}
    else:
        assert p.window_seconds is not None
        log = _log(outcome.state) or sliding_window.SlidingLog()
        state = {"log": [list(e) for e in sliding_window.lease(log, now, p.window_seconds, now + seconds,
                                                                units).entries]}
    lent = _evaluate(p, state, now, 0.0)
    return _Outcome(True, lent.state, lent.used, 0.0, lent.reset_after, lent.window_seconds, lent.expires_at,
                    lent.spare), seconds


def _given_back(policy: Policy, stored: _Stored | None, now: float, check: _Check) -> _Stored | None:
    """The row after a lease lent by the call at ``check.back_at`` has ended: ``back`` units
    it did not spend, ``lent`` what it was lent, ``refund`` what requests it served were
    refunded after it ended (as a reconcile refunds). None when nothing changes."""
    p, at, units = policy, check.back_at, check.back
    if p.algorithm == "token_bucket":
        assert p.refill_per_second is not None
        until = token_bucket.grid(at + HELD_SECONDS, HELD_GRID)
        bucket = token_bucket.give_back(_bucket(stored), now, p.limit, p.refill_per_second, until, units, check.lent)
        if check.refund:
            bucket = token_bucket.adjust(bucket, now, p.limit, p.refill_per_second, -check.refund)
        return _bucket_state(bucket) if bucket else None
    units += check.refund
    if p.algorithm == "fixed_window":
        window = fixed_window.WindowState(float(stored["start"]), float(stored["used"])) if stored else None
        w = fixed_window.adjust(window, now, at, -units, p.window_seconds, p.calendar)
        return {"start": w.start, "used": w.used} if w else None
    assert p.window_seconds is not None
    seconds = sliding_window.lease_seconds(p.window_seconds, LEASE_SECONDS)
    log = sliding_window.give_back(_log(stored), now, p.window_seconds, at + seconds, units)
    return {"log": [list(e) for e in log.entries]} if log else None


@dataclass(frozen=True, slots=True)
class _Check:
    key: str
    policy: Policy
    cost: float
    lease: int  # requests' worth of ``cost`` wanted beyond this one
    back: float  # units an ended lease did not spend
    lent: float  # what that lease was lent
    refund: float  # refunds of requests it served, settled after it ended
    back_at: float  # the ``at`` of the call that lent it

    @property
    def gives_back(self) -> bool:
        return bool(self.back or self.lent or self.refund)

    @property
    def decides(self) -> bool:
        """False for an entry that only gives back: it never refuses the call."""
        return not (self.gives_back and self.cost == 0)


class RateLimiter:
    """One object's rows. ``partition(name)`` gives the object ``name`` over the same store:
    how the local host keeps every partition in one SQLite table (a Durable Object has
    storage of its own and needs no name)."""

    def __init__(self, sql: SqlStorage, clock: Clock, _rows: _SqlRows | MemoryRows | None = None,
                 _name: str = "") -> None:
        self._rows = _rows if _rows is not None else _SqlRows(sql)
        self._clock = clock
        self._name = _name

    @classmethod
    def in_memory(cls, clock: Clock) -> RateLimiter:
        """A limiter with no storage of its own: the fail-open fallback inside one isolate."""
        return cls(None, clock, MemoryRows())  # type: ignore[arg-type]

    def partition(self, name: str) -> RateLimiter:
        if not isinstance(name, str) or not name or "|" in name or len(name) > MAX_KEY_LENGTH:
            raise PolicyError("a partition name is a non-empty string without '|'")
        return RateLimiter(None, self._clock, self._rows, _in(self._name, name))  # type: ignore[arg-type]

    # -- helpers -------------------------------------------------------------------------
    def _load(self, key: str, policy: Policy) -> _Stored | None:
        row = self._rows.get(_in(self._name, key))
        if row is None:
            return None
        stored_policy, state = json.loads(row[0]), json.loads(row[1])
        # A policy whose algorithm changed starts afresh rather than misreading the state.
        return state if stored_policy.get("algorithm") == policy.algorithm else None

    def _save(self, key: str, policy: Policy, state: _Stored, expires_at: float) -> None:
        self._rows.put(_in(self._name, key), json.dumps(policy.as_dict()), json.dumps(state), expires_at)
        self._rows.writes += 1
        if self._rows.writes % SWEEP_EVERY == 0:
            self._rows.sweep(self._clock.now())

    @staticmethod
    def _report(key: str, policy: Policy, outcome: _Outcome, cost: float) -> _Report:
        return {
            "key": key,
            "policy": policy.name,
            "unit": policy.unit,
            "allowed": outcome.allowed,
            "limit": _count(policy.limit, policy.unit),
            "used": _count(outcome.used, policy.unit, up=True),
            "remaining": _count(max(0.0, policy.limit - outcome.used), policy.unit),
            "reset_seconds": round(outcome.reset_after, 3),
            "retry_after_seconds": round(outcome.retry_after, 3),
            "window_seconds": round(outcome.window_seconds, 3),
            # This request alone is more than the policy ever allows: waiting will not help.
            "exceeds_limit": cost > policy.limit,
        }

    @staticmethod
    def _parse_checks(items: Any, amount: str) -> list[tuple[str, Policy, float, float | None]]:
        if not isinstance(items, list | tuple) or not items or len(items) > MAX_CHECKS:
            raise PolicyError(f"expected a list of 1 to {MAX_CHECKS} entries")
        parsed = []
        for item in items:
            if not isinstance(item, Mapping):
                raise PolicyError("each entry must be an object")
            key = item.get("key")
            if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
                raise PolicyError(f"key must be a string of 1 to {MAX_KEY_LENGTH} characters")
            value = item.get(amount, 1.0 if amount == "cost" else 0.0)
            if amount == "cost":
                value = _number(value, "cost")
            elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise PolicyError("delta must be a finite number")
            at = item.get("at")
            if at is not None and (isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at)):
                raise PolicyError("at must be a number")
            parsed.append((key, Policy.from_dict(item.get("policy")), float(value), at))
        return parsed

    @classmethod
    def _parse_acquire(cls, items: Any) -> list[_Check]:
        parsed = []
        for item, (key, policy, cost, _) in zip(items, cls._parse_checks(items, "cost"), strict=True):
            lease = item.get("lease", 0)
            if isinstance(lease, bool) or not isinstance(lease, int | float) or not 0 <= lease <= MAX_GRANT:
                raise PolicyError(f"lease must be a number of requests from 0 to {MAX_GRANT}")
            back, lent, refund = (_number(item.get(name, 0), name) for name in ("back", "lent", "refund"))
            back_at = item.get("back_at", 0.0)
            if (back or lent or refund) and (isinstance(back_at, bool) or not isinstance(back_at, int | float)
                                             or not math.isfinite(back_at)):
                raise PolicyError("back_at must be a number")
            parsed.append(_Check(key, policy, cost, int(lease), back, lent, refund, float(back_at)))
        return parsed

    # -- the object's methods (RPC on the edge) ------------------------------------------
    def check(self, key: str, policy: dict[str, Any], cost: float = 1.0) -> dict[str, Any]:
        """One policy for one key: the decision, and the units taken when allowed."""
        return self.acquire([{"key": key, "policy": policy, "cost": cost}])["results"][0]

    def acquire(self, checks: list[dict[str, Any]]) -> dict[str, Any]:
        """Take each check's ``cost`` from its row, all or nothing; lend leases.

        ``checks``: ``[{"key", "policy", "cost", "lease"?, "back"?, "lent"?, "refund"?,
        "back_at"?}]``. Returns ``{"allowed", "at", "lease", "results"}`` with one decision
        per check; when any is refused, no row changes except by what ended leases gave
        back (applied first, so it counts toward this call). ``lease``: the requests' worth lent, each result then
        saying how many units it lent (``leased``) and for how long (``lease_seconds``).
        """
        now = self._clock.now()
        parsed = self._parse_acquire(checks)
        for c in parsed:
            if c.gives_back:
                state = _given_back(c.policy, self._load(c.key, c.policy), now, c)
                if state is not None:
                    returned = _evaluate(c.policy, state, now, 0.0)
                    self._save(c.key, c.policy, returned.state, returned.expires_at)
        outcomes = [_evaluate(c.policy, self._load(c.key, c.policy), now, c.cost if c.decides else 0.0)
                    for c in parsed]
        allowed = all(o.allowed for c, o in zip(parsed, outcomes, strict=True) if c.decides)
        lent = [0.0] * len(parsed)
        seconds = [0.0] * len(parsed)
        wanting = [i for i, c in enumerate(parsed) if c.decides and c.lease > 0 and c.cost > 0]
        grant = 0
        if allowed and wanting:
            grant = min(min(parsed[i].lease for i in wanting),
                        *(math.floor(outcomes[i].spare / LEASE_SHARE / parsed[i].cost + 1e-9) for i in wanting))
            grant = max(0, grant)
            for i in wanting if grant else ():
                lent[i] = grant * parsed[i].cost
                outcomes[i], seconds[i] = _lend(parsed[i].policy, outcomes[i], now, lent[i])
        if allowed:
            for c, outcome in zip(parsed, outcomes, strict=True):
                if c.decides:
                    self._save(c.key, c.policy, outcome.state, outcome.expires_at)
        results = []
        for i, (c, o) in enumerate(zip(parsed, outcomes, strict=True)):
            result = self._report(c.key, c.policy, o, c.cost)
            if lent[i]:
                result["leased"] = lent[i]
                result["lease_seconds"] = round(seconds[i], 6)
            results.append(result)
        return {"allowed": allowed, "at": now, "lease": grant, "results": results}

    def reconcile(self, adjustments: list[dict[str, Any]]) -> dict[str, Any]:
        """Correct reservations with real usage: ``[{"key", "policy", "delta", "at"}]``.

        ``delta`` > 0 charges more (never refused, it was already spent), < 0 refunds;
        ``at`` is the ``at`` of the acquire that reserved it. Returns the rows' new state.
        """
        now = self._clock.now()
        results = []
        for key, policy, delta, at in self._parse_checks(adjustments, "delta"):
            state = _adjusted(policy, self._load(key, policy), now, now if at is None else float(at), delta)
            outcome = _evaluate(policy, state, now, 0.0)
            self._save(key, policy, outcome.state, outcome.expires_at)
            results.append(self._report(key, policy, outcome, 0.0))
        return {"at": now, "results": results}

    def usage(self) -> dict[str, Any]:
        """Every live row with its current use, read-only (the admin view)."""
        now = self._clock.now()
        limits = []
        for key, policy_json, state_json in self._rows.all(self._name):
            try:
                policy = Policy.from_dict(json.loads(policy_json))
                outcome = _evaluate(policy, json.loads(state_json), now, 0.0)
            except (ValueError, KeyError, TypeError):
                continue  # a row from an older layout: it will be overwritten or swept
            if outcome.used <= 1e-9:
                continue  # back to its fresh state: nothing to report
            report = self._report(key, policy, outcome, 0.0)
            report.pop("allowed")
            report.pop("retry_after_seconds")
            report.pop("exceeds_limit")
            report["algorithm"] = policy.algorithm
            limits.append(report)
        return {"at": now, "limits": limits}

    def reset(self, policy: str = "") -> dict[str, Any]:
        """Forget the rows of one policy (every row when ``policy`` is empty)."""
        if not isinstance(policy, str):
            raise PolicyError("policy must be a string")
        return {"reset": self._rows.delete(_in(self._name, policy))}
