"""Operational events the hub pushes to subscribers: failover, circuit change, rate-limit
saturation, error spikes and a degraded (unreachable) rate limiter.

Each becomes one ``{"type": "event", ...}`` message (shape in docs/hub-protocol.md). Bursts
are folded: after an event of a given kind and subject is sent, the same one is held back
for its cooldown and counted, and the next message carries that count. State (cooldowns,
the recent-event log) is in SQL so a hibernated hub loses nothing.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

from ..ports import SqlStorage
from .store import HubStore, ParsedEvent, label

KINDS = ("failover", "circuit", "rate_limit_saturation", "error_spike", "ratelimit_degraded")
COOLDOWN_SECONDS = {"failover": 30.0, "circuit": 0.0, "rate_limit_saturation": 60.0, "error_spike": 60.0,
                    "ratelimit_degraded": 60.0}
SEVERITY = {"failover": "warning", "rate_limit_saturation": "warning", "error_spike": "critical",
            "ratelimit_degraded": "critical"}
RECENT_KEPT = 50

SATURATION_AT = 0.8  # share of a key's limit used
SPIKE_WINDOW_SECONDS = 60
SPIKE_MIN_FAILURES = 5
SPIKE_MIN_RATE = 0.25
CIRCUIT_STATES = ("closed", "open", "half_open")

# The ``detail`` of each kind (docs/hub-protocol.md). "from" is a keyword: functional form.
FailoverDetail = TypedDict("FailoverDetail", {"from": list[str], "to": str | None, "model": str})


class SaturationDetail(TypedDict):
    key_id: str
    limit: float
    remaining: float
    used_ratio: float
    rejected: bool


class SpikeDetail(TypedDict):
    window_s: int
    requests: int
    failures: int
    failure_rate: float


class CircuitDetail(TypedDict):
    provider: str
    state: str
    previous: str | None


class DegradedDetail(TypedDict):
    mode: str
    policies: list[str]
    error: str
    checks: int


EventDetail = FailoverDetail | SaturationDetail | SpikeDetail | CircuitDetail | DegradedDetail


class HubEvent(TypedDict):
    """One ``{"type": "event", ...}`` message as subscribers get it (and the recent log keeps it)."""

    type: str  # "event"
    event: str  # one of KINDS
    ts: float
    severity: str
    message: str
    detail: EventDetail
    count: int  # 1 + the same events folded into it during the cooldown


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hub_alert (name TEXT PRIMARY KEY, last_ts REAL NOT NULL,"
    " suppressed INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS hub_event (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,"
    " body TEXT NOT NULL)",
)


class EventDetector:
    def __init__(self, sql: SqlStorage, store: HubStore) -> None:
        self._sql = sql
        self._store = store
        for statement in SCHEMA:
            sql.exec(statement)

    # -- detection -----------------------------------------------------------------------
    def from_requests(self, events: list[ParsedEvent], now: float) -> list[HubEvent]:
        found: list[HubEvent] = []
        for event in events:
            failed = [provider for provider, ok in event.attempts if not ok]
            if failed and event.counts["failovers"]:
                to = event.attempts[-1][0] if event.attempts[-1][1] else None
                found += self._emit("failover", f"{'>'.join(failed)}>{to}", now, {
                    "from": failed, "to": to, "model": event.model,
                }, f"Provider {', '.join(failed)} failed; "
                   + (f"{to} answered" if to else "no provider answered") + f" (model {event.model}).")
            limit = event.raw.get("ratelimit_limit")
            remaining = event.raw.get("ratelimit_remaining")
            if isinstance(limit, int | float) and isinstance(remaining, int | float) and limit > 0:
                used = 1 - max(0.0, remaining) / limit
                if used >= SATURATION_AT:
                    found += self._emit("rate_limit_saturation", event.key, now, {
                        "key_id": event.key, "limit": limit, "remaining": remaining,
                        "used_ratio": round(used, 4), "rejected": event.error_class == "rate_limited",
                    }, f"Key {event.key} has used {used:.0%} of its rate limit ({remaining:g} of {limit:g} left).")
        if events and any(e.counts["failures"] for e in events):
            found += self._error_spike(now)
        return found

    def _error_spike(self, now: float) -> list[HubEvent]:
        live = self._store.seconds(now - SPIKE_WINDOW_SECONDS)
        requests, failures = live["requests"], live["failures"]
        if failures < SPIKE_MIN_FAILURES or failures / max(1, requests) < SPIKE_MIN_RATE:
            return []
        rate = failures / requests
        return self._emit("error_spike", "gateway", now, {
            "window_s": SPIKE_WINDOW_SECONDS, "requests": requests, "failures": failures,
            "failure_rate": round(rate, 4),
        }, f"{failures} of {requests} requests failed in the last {SPIKE_WINDOW_SECONDS} s ({rate:.0%}).")

    def from_publishers(self, items: list[dict[str, Any]], now: float) -> list[HubEvent]:
        """Events other components publish directly, e.g. a circuit breaker's state change:
        ``{"event": "circuit", "provider": "p", "state": "open", "previous": "closed"}``
        (the hub protocol's JSON as it arrived: checked here)."""
        found: list[HubEvent] = []
        for item in items:
            if item.get("event") != "circuit" or item.get("state") not in CIRCUIT_STATES:
                continue
            provider = label(item.get("provider"))
            previous = item.get("previous") if item.get("previous") in CIRCUIT_STATES else None
            state = item["state"]
            severity = "critical" if state == "open" else "info" if state == "closed" else "warning"
            found += self._emit("circuit", f"{provider}:{state}", now, {
                "provider": provider, "state": state, "previous": previous,
            }, f"Circuit for provider {provider} is now {state.replace('_', '-')}.", severity)
        return found

    def from_operational(self, items: list[dict[str, Any]], now: float) -> list[HubEvent]:
        """Typed operational events (``{"type": ...}``) from the core: the rate limiter's
        ``ratelimit_degraded`` report (ratelimits/enforcer.py) and circuit changes (health.py).
        Typed ``failover`` events are relayed as they are but not folded here: the failover
        event below comes from the request's attempts, once per request."""
        found: list[HubEvent] = []
        for item in items:
            if item.get("type") == "circuit":  # from the upstream caller (health.py)
                found += self.from_publishers([{
                    "event": "circuit", "provider": item.get("provider") or str(item.get("target") or "").split("/")[0],
                    "state": item.get("to"), "previous": item.get("from")}], now)
                continue
            if item.get("type") != "ratelimit_degraded":
                continue
            mode = label(item.get("mode"))
            policies = [label(p) for p in item.get("policies", [])[:20]] if isinstance(item.get("policies"), list) else []
            raw_count = item.get("count")
            count = raw_count if isinstance(raw_count, int) else 1
            found += self._emit("ratelimit_degraded", mode, now, {
                "mode": mode, "policies": policies, "error": label(item.get("error")), "checks": count,
            }, f"The rate limiter is unreachable; {', '.join(policies) or 'its policies'} "
               f"{'admit' if mode == 'fail_open' else 'refuse'} requests ({mode.replace('_', ' ')}).")
        return found

    # -- folding and the log -------------------------------------------------------------
    def _emit(self, kind: str, subject: str, now: float, detail: EventDetail, message: str,
              severity: str | None = None) -> list[HubEvent]:
        name = f"{kind}:{subject}"[:200]
        rows = self._sql.exec("SELECT last_ts, suppressed FROM hub_alert WHERE name = ?", name)
        if rows and now - rows[0]["last_ts"] < COOLDOWN_SECONDS[kind]:
            self._sql.exec("UPDATE hub_alert SET suppressed = suppressed + 1 WHERE name = ?", name)
            return []
        folded = rows[0]["suppressed"] if rows else 0
        self._sql.exec(
            "INSERT INTO hub_alert (name, last_ts, suppressed) VALUES (?, ?, 0)"
            " ON CONFLICT(name) DO UPDATE SET last_ts = excluded.last_ts, suppressed = 0",
            name, now,
        )
        event: HubEvent = {"type": "event", "event": kind, "ts": round(now, 3),
                 "severity": severity or SEVERITY.get(kind, "info"), "message": message,
                 "detail": detail, "count": 1 + folded}
        self._sql.exec("INSERT INTO hub_event (ts, body) VALUES (?, ?)", now, json.dumps(event))
        self._sql.exec("DELETE FROM hub_event WHERE id <= (SELECT MAX(id) FROM hub_event) - ?", RECENT_KEPT)
        self._sql.exec("DELETE FROM hub_alert WHERE last_ts < ?", now - 3600)
        return [event]

    def recent(self, limit: int = 20) -> list[HubEvent]:
        rows = self._sql.exec("SELECT body FROM hub_event ORDER BY id DESC LIMIT ?", limit)
        return [json.loads(row["body"]) for row in rows]
