"""The rate-limiter object: one logical instance per limit key, state in SQL.

Every check is a read-modify-write with no ``await`` inside, so it is atomic both in a
Durable Object (input gates, synchronous SQL) and in the local single-threaded loop.
"""

from __future__ import annotations

import math
from typing import Any

from ..ports import Clock, SqlStorage
from .token_bucket import BucketState, take

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rl_buckets ("
    " key TEXT PRIMARY KEY, tokens REAL NOT NULL, updated_at REAL NOT NULL)"
)


class RateLimiter:
    def __init__(self, sql: SqlStorage, clock: Clock) -> None:
        self._sql = sql
        self._clock = clock
        sql.exec(SCHEMA)

    def check(self, key: str, policy: dict[str, Any], cost: float = 1.0) -> dict[str, Any]:
        capacity = float(policy["capacity"])
        rate = float(policy["refill_per_second"])
        rows = self._sql.exec("SELECT tokens, updated_at FROM rl_buckets WHERE key = ?", key)
        state = BucketState(rows[0]["tokens"], rows[0]["updated_at"]) if rows else None
        decision = take(state, self._clock.now(), capacity, rate, cost)
        self._sql.exec(
            "INSERT INTO rl_buckets (key, tokens, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET tokens = excluded.tokens,"
            " updated_at = excluded.updated_at",
            key,
            decision.state.tokens,
            decision.state.updated_at,
        )
        return {
            "allowed": decision.allowed,
            "limit": int(capacity),
            "remaining": max(0, math.floor(decision.state.tokens)),
            "reset_seconds": round(decision.reset_after, 3),
            "retry_after_seconds": round(decision.retry_after, 3),
        }
