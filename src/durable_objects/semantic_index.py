"""The SemanticIndex Durable Object: one instance per semantic-cache partition
(``getByName(partition)``), holding that partition's codes, vectors and guard features in
its SQLite, its codes mirrored in memory while the object lives (cache/semantic/index.py)."""

from typing import Any

from workers import DurableObject

from flaregate.hosts.edge import objects
from flaregate.hosts.edge.rpc import json_method


class SemanticIndex(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self._index = objects.semantic_index(self.ctx)

    # RPC, JSON in and out (hosts/edge/rpc.py): search, add, delete. Synchronous: a search
    # and an add of one partition never interleave.
    @json_method
    def run_op(self, op: str, args: dict[str, Any]) -> Any:
        return self._index.call(str(op), args or {})
