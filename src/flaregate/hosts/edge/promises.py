"""JavaScript promises awaited so that they never raise: a pipe or a read that rejects is an
outcome to look at (the client left, the upstream broke), not an error to unwind with."""

from __future__ import annotations

from typing import Any


async def settled(promise: Any) -> Any:
    """The promise's value, or the exception it rejected with (never raised)."""
    try:
        return await promise
    except Exception as exc:
        return exc
