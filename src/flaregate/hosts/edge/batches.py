"""The Worker's side of files and batches: the job store of each gateway key is a
``BatchStore`` Durable Object (``getByName(key_id)``), reached over RPC; waking a batch asks
that object to arm its alarm (which runs the lines, ``batch_object.py``)."""

from __future__ import annotations

from typing import Any

from . import rpc
from .ports import current

BINDING = "BATCH_STORE"


def _stub(owner: str) -> Any:
    return getattr(rpc.raw_env(current().env), BINDING).getByName(owner)


class DurableJobStore:
    async def call(self, owner: str, op: str, args: dict[str, Any]) -> Any:
        return await rpc.call(_stub(owner), "run_op", op, dict(args))


async def wake(owner: str, batch_id: str) -> None:
    """Arm the owner's object's alarm (a poll is enough: an alarm lost in a restart of the
    runtime is armed again by the next status read)."""
    await rpc.call(_stub(owner), "wake", batch_id)
