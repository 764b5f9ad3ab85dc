"""Gateway keys: ``Authorization: Bearer <key>`` checked against configured keys.

Keys are held only as SHA-256 digests; a key's public id (for limits, cache tenancy and
analytics) is derived from its digest, so no plain key travels further than this module.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from ..errors import unauthorized
from ..http import Headers


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id(key: str) -> str:
    return "key_" + key_digest(key).hex()[:16]


class KeyRing:
    def __init__(self, keys: Iterable[str]) -> None:
        self._ids = {key_digest(k): key_id(k) for k in keys}

    def __bool__(self) -> bool:
        return bool(self._ids)

    def has_id(self, ident: str) -> bool:
        return ident in self._ids.values()

    def find(self, token: str) -> str | None:
        """The key id of a configured key, or None; compares every digest in constant time."""
        digest = key_digest(token)
        found = None
        for known, ident in self._ids.items():
            if hmac.compare_digest(known, digest):
                found = ident
        return found

    def authenticate_token(self, token: str | None) -> str:
        """Return the key id for a presented key, or raise a 401 GatewayError."""
        if not self._ids:
            raise unauthorized("No gateway keys are configured; set the FLAREGATE_API_KEYS secret.")
        if not token:
            raise unauthorized("Missing API key: send 'Authorization: Bearer <gateway key>'.")
        digest = key_digest(token)
        for known, ident in self._ids.items():
            # Compare digests in constant time, all of them, so timing says nothing.
            if hmac.compare_digest(known, digest):
                return ident
        raise unauthorized("Incorrect API key provided.")

    def authenticate(self, headers: Headers) -> str:
        """The key id of the ``Authorization: Bearer`` key (never one from the query)."""
        auth = headers.get("authorization") or ""
        scheme, _, token = auth.partition(" ")
        return self.authenticate_token(token.strip() if scheme.lower() == "bearer" else None)
