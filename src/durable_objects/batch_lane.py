"""The BatchLane Durable Object: ``<batch id>:<n>``, a lane a batch's lines are fanned out
over (one invocation holds at most six connections): it runs each line it is given through
the Worker's pipeline and answers with the result. It keeps nothing of its own."""

from typing import Any

from workers import DurableObject

from flaregate.hosts.edge.rpc import json_method


class BatchLane(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        # Imported here, not at start-up: the batch modules load when a batch runs.
        from flaregate.hosts.edge.batch_object import BatchLaneBody

        self._body = BatchLaneBody(self.ctx, self.env)

    @json_method
    async def run_line(self, endpoint: str, body: str, key_id: str, batch_id: str) -> dict[str, Any]:
        return await self._body.run_line(str(endpoint), str(body), str(key_id), str(batch_id))
