"""A key's open Realtime sessions, counted across isolates and replicas in the security store
(``store.py``): a slot per session, renewed by a heartbeat, expiring on its own when the
isolate or process holding it is gone."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import GatewayError
from ..ports import Clock, SecurityStoreClient
from .settings import RealtimeSettings

log = logging.getLogger("flaregate.realtime")


class _MemorySlots:
    """Slots in this isolate only: when no security store is configured (an edge deployment
    without the SECURITY_STORE binding)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._held: dict[str, tuple[str, float]] = {}

    def call(self, op: str, args: dict[str, Any]) -> Any:
        now = self._clock.now()
        self._held = {s: v for s, v in self._held.items() if v[1] > now}
        session = args["session"]
        if op == "realtime.slots.acquire":
            held = sum(1 for key, _ in self._held.values() if key == args["key_id"])
            if held >= args["limit"]:
                return {"allowed": False, "held": held, "limit": args["limit"], "retry_after_seconds": 1.0}
            self._held[session] = (args["key_id"], now + args["ttl"])
            return {"allowed": True, "held": held + 1, "limit": args["limit"]}
        if op == "realtime.slots.renew":
            if session not in self._held:
                return False
            self._held[session] = (self._held[session][0], now + args["ttl"])
            return True
        return self._held.pop(session, None) is not None  # realtime.slots.release


class SessionSlots:
    def __init__(self, settings: RealtimeSettings, clock: Clock, store: SecurityStoreClient | None) -> None:
        self._settings = settings
        self._store = store
        self._memory = _MemorySlots(clock)

    async def _call(self, op: str, args: dict[str, Any]) -> Any:
        if self._store is not None:
            return await self._store.call(op, args)
        return self._memory.call(op, args)

    async def take(self, key_id: str, session: str) -> None:
        """One of the key's slots, or a 429 ``too_many_sessions`` with ``Retry-After``."""
        limit = self._settings.max_sessions_per_key
        answer = await self._call("realtime.slots.acquire", {"key_id": key_id, "session": session, "limit": limit,
                                                             "ttl": self._settings.slot_ttl_seconds})
        if not isinstance(answer, dict) or not answer.get("allowed"):
            wait = int(max(1.0, float((answer or {}).get("retry_after_seconds", 1.0))))
            raise GatewayError(429, f"This key already has {limit} Realtime sessions open; close one first.",
                               type="rate_limit_error", code="too_many_sessions", headers={"retry-after": str(wait)})

    async def hold(self, key_id: str, session: str, ended: asyncio.Event) -> None:
        """Renew the slot every third of its TTL until ``ended``."""
        every = self._settings.slot_ttl_seconds / 3
        while True:
            try:
                await asyncio.wait_for(ended.wait(), every)
                return
            except TimeoutError:
                pass
            try:
                await self._call("realtime.slots.renew", {"key_id": key_id, "session": session,
                                                          "ttl": self._settings.slot_ttl_seconds})
            except Exception:  # the store away for a beat: at worst the slot lapses
                log.warning("could not renew a realtime session slot", exc_info=True)

    async def release(self, key_id: str, session: str) -> None:
        try:
            await self._call("realtime.slots.release", {"key_id": key_id, "session": session})
        except Exception:
            log.warning("could not release a realtime session slot (it lapses with its TTL)", exc_info=True)
