"""Which shard of a stateful object holds a record: one function for every sharded store.

The security store places a gateway key by its digest and a signing nonce by its value,
teams by their id, all through :func:`shard_for`: rendezvous (highest-random-weight)
hashing, so going from N to N+1 shards moves only the 1/(N+1) of records the new shard wins
and leaves every other where it was. A record placed under the previous count is still read
(:func:`placements`: the current shard first, then the previous one when it differs), so a
change of N loses nothing while ``*_SHARDS_PREVIOUS`` names the old count.

Shard 0 keeps the name the single object always had (``"global"``): a deployment that
starts sharding finds its existing records where the previous count (1) placed them.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

FIRST_SHARD_NAME = "global"
MAX_SHARDS = 256


def shard_name(index: int) -> str:
    """The Durable Object name of shard ``index``."""
    return FIRST_SHARD_NAME if index == 0 else f"shard-{index}"


def shard_for(key: str, shards: int) -> int:
    """The shard of ``key`` among ``shards`` (rendezvous hashing; 0 when there is one)."""
    if shards <= 1:
        return 0
    data = key.encode("utf-8", "surrogatepass")
    best, best_score = 0, b""
    for index in range(shards):
        score = hashlib.blake2b(data, digest_size=8, salt=index.to_bytes(8, "little")).digest()
        if score > best_score:
            best, best_score = index, score
    return best


def placements(key: str, shards: int, previous: int | None = None) -> list[int]:
    """Where to look for ``key``, in order: its shard now, then its shard under the
    previous count when that differs."""
    current = shard_for(key, shards)
    if previous and previous != shards:
        before = shard_for(key, previous)
        if before != current:
            return [current, before]
    return [current]


class ShardSettings(BaseModel):
    """How many objects each sharded store spreads over (the edge; the local host keeps one
    of each and runs the same merge code over it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # HUB_SHARDS: metrics-hub objects the isolates' analytics batches are spread over; every
    # read (/metrics, /v1/analytics, /v1/logs, /health, /ws) merges them.
    hub_shards: int = Field(default=1, ge=1, le=MAX_SHARDS)
    # HUB_PUBLISH_TIMEOUT_SECONDS: a shard slower than this keeps the batch in the isolate's
    # buffer (HUB_BUFFER_BATCHES per shard), dropped and counted when that fills.
    hub_publish_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    hub_buffer_batches: int = Field(default=20, ge=0, le=1000)
    # SECURITY_SHARDS: security-store objects keys (by digest) and nonces (by value) are spread
    # over; SECURITY_SHARDS_PREVIOUS: the count before the last change, read as a fallback.
    security_shards: int = Field(default=1, ge=1, le=MAX_SHARDS)
    security_shards_previous: int | None = Field(default=None, ge=1, le=MAX_SHARDS)
