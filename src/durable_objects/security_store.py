"""The SecurityStore Durable Object: the single ("global") store of gateway-key hashes,
signing nonces, webhooks and their delivery log."""

from typing import Any

from workers import DurableObject

from flaregate.hosts.edge import objects
from flaregate.hosts.edge.rpc import json_method


class SecurityStore(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self._store = objects.security_store(self.ctx)

    # RPC, JSON in and out (hosts/edge/rpc.py). Synchronous on purpose: no await between
    # read and write keeps each operation atomic (a nonce is used once, a key revoked
    # exactly when the call returns).
    @json_method
    def run_op(self, op: str, args: dict[str, Any]) -> Any:
        return self._store.call(str(op), args or {})
