"""Gateway sessions without sticky state: everything a session needs travels in its id.

``Mcp-Session-Id`` is a sealed token (sealing.py) holding the key it belongs to, the
protocol revision agreed with the client, when it began, and each upstream server's
session id as ``initialize`` found them. Any replica or isolate that has the secret can
serve any request of any session; none keeps a session table.

A sealed id cannot change after ``initialize``, so an upstream session found gone later (a
404: expired, or the server restarted) is initialised again and the new id kept here, per
isolate, under the gateway session's id (bounded): another isolate that meets the same
404 initialises its own, and the client never notices either.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .sealing import Sealer
from .upstream import UpstreamSession

_REPLACED_LIMIT = 10_000


@dataclass(slots=True)
class GatewaySession:
    key_id: str
    protocol_version: str
    created: float
    upstream: dict[str, UpstreamSession] = field(default_factory=dict)
    # What the client can answer (sampling, elicitation, roots): declared to each server.
    capabilities: dict[str, Any] = field(default_factory=dict)
    token: str = ""  # the sealed id it was opened from (or sealed into)

    def to_json(self) -> bytes:
        return json.dumps({"k": self.key_id, "v": self.protocol_version, "t": round(self.created, 3),
                           "c": self.capabilities,
                           "u": {name: [s.session_id or "", s.protocol_version] for name, s in self.upstream.items()}},
                          separators=(",", ":")).encode()


def _from_json(raw: bytes) -> GatewaySession | None:
    try:
        data = json.loads(raw)
        upstream = {str(name): UpstreamSession(str(pair[0]) or None, str(pair[1]))
                    for name, pair in data["u"].items()}
        capabilities = data.get("c") if isinstance(data.get("c"), dict) else {}
        return GatewaySession(str(data["k"]), str(data["v"]), float(data["t"]), upstream, capabilities)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


class Sessions:
    def __init__(self, secret: bytes | None, max_age_seconds: float) -> None:
        # No secret configured: a random one, good for this isolate only (documented).
        self.shared = secret is not None
        self._sealer = Sealer(secret if secret is not None else os.urandom(32), "mcp-session")
        self._max_age = max_age_seconds
        self._replaced: OrderedDict[tuple[str, str], UpstreamSession] = OrderedDict()

    def seal(self, session: GatewaySession) -> str:
        session.token = self._sealer.seal(session.to_json())
        return session.token

    def open(self, token: str, key_id: str, now: float) -> GatewaySession | None:
        """The session a client's id names, or None (forged, another key's, expired)."""
        raw = self._sealer.open(token)
        session = _from_json(raw) if raw is not None else None
        if session is None or session.key_id != key_id or not 0 <= now - session.created <= self._max_age:
            return None
        session.token = token
        digest = _digest(token)
        for name in session.upstream:
            replaced = self._replaced.get((digest, name))
            if replaced is not None:
                session.upstream[name] = replaced
        return session

    def upstream(self, session: GatewaySession, server: str) -> UpstreamSession | None:
        found = session.upstream.get(server)
        if found is None and session.token:
            found = self._replaced.get((_digest(session.token), server))
        return found

    def replace(self, session: GatewaySession, server: str, upstream: UpstreamSession) -> None:
        """Keep a re-initialised upstream session for this gateway session (this isolate)."""
        session.upstream[server] = upstream
        if not session.token:
            return
        key = (_digest(session.token), server)
        self._replaced[key] = upstream
        self._replaced.move_to_end(key)
        while len(self._replaced) > _REPLACED_LIMIT:
            self._replaced.popitem(last=False)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]
