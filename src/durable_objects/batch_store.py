"""The BatchStore Durable Object: one per gateway key (``getByName(key_id)``), holding that
key's files catalogue, batches and per-line checkpoints, and running its batches in alarms."""

from typing import Any

from workers import DurableObject

from flaregate.hosts.edge.rpc import json_method


class BatchStore(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        # Imported here, not at start-up: the batch modules load when a batch runs.
        from flaregate.hosts.edge.batch_object import BatchStoreBody

        self._body = BatchStoreBody(self.ctx, self.env)

    async def alarm(self, alarm_info: Any = None) -> None:
        await self._body.alarm()

    # RPC, JSON in and out (hosts/edge/rpc.py). Synchronous on purpose: no await between a
    # read and its write keeps each operation atomic (a line's result is written once).
    @json_method
    def run_op(self, op: str, args: dict[str, Any]) -> Any:
        return self._body.run_op(str(op), args or {})

    @json_method
    async def wake(self, batch_id: str) -> bool:
        await self._body.wake()
        return True
