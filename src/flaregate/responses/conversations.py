"""The turns behind ``previous_response_id``, kept by the gateway for responses it relayed.

Every successful ``/v1/responses`` answer stores its conversation (the earlier turns, this
request's input items and the answer's output items, in Responses item form) in the
host's key-value store: SQLite on the standalone server (one file, shared by its workers),
Workers KV on the edge (namespace ``CACHE``; KV is eventually consistent, so a follow-up
sent to another Cloudflare location within about a minute may not find it yet). Entries
live ``TTL_SECONDS`` (one day) and are keyed by the gateway key that made them: another
key cannot continue, or read, someone else's conversation.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..ports import KeyValueStore

log = logging.getLogger("flaregate.responses")

TTL_SECONDS = 86_400
MAX_STORED_BYTES = 512 * 1024  # a longer conversation is not stored: continuing it says so
_KEPT_TYPES = ("message", "function_call", "function_call_output")


def _key(key_id: str, response_id: str) -> str:
    return f"responses:{key_id}:{response_id}"


def _clean(item: Any) -> dict[str, Any] | None:
    """An item as it can be sent again: provider-side ids, status and reasoning dropped."""
    if isinstance(item, str):
        return {"role": "user", "content": item}
    if not isinstance(item, dict) or item.get("type", "message") not in _KEPT_TYPES:
        return None
    out = {k: v for k, v in item.items() if k not in ("id", "status")}
    if out.get("type", "message") == "message":
        out = {"role": out.get("role", "user"), "content": out.get("content")}
    return out


class Conversations:
    def __init__(self, store: KeyValueStore) -> None:
        self._store = store

    async def history(self, key_id: str, response_id: str) -> list[dict[str, Any]] | None:
        try:
            raw = await self._store.get(_key(key_id, response_id))
        except Exception:  # a storage failure reads as "not found", never as a 5xx
            log.warning("conversation store unavailable on read", exc_info=True)
            return None
        if raw is None:
            return None
        try:
            items = json.loads(raw)
        except ValueError:
            return None
        return items if isinstance(items, list) else None

    async def save(self, key_id: str, response_id: str, history: list[dict[str, Any]], request_input: Any,
                   output: Any) -> None:
        current = [request_input] if isinstance(request_input, str) else list(request_input or [])
        items = [*history, *(c for c in (_clean(i) for i in [*current, *(output or [])]) if c is not None)]
        text = json.dumps(items, separators=(",", ":"))
        if len(text) > MAX_STORED_BYTES:
            log.info("conversation %s not stored: %d bytes", response_id[:64], len(text))
            return
        try:
            await self._store.put(_key(key_id, response_id), text, TTL_SECONDS)
        except Exception:
            log.warning("conversation store unavailable on write", exc_info=True)
