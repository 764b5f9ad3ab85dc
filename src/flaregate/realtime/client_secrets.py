"""Ephemeral Realtime client secrets: ``POST /v1/realtime/client_secrets`` (as OpenAI's)
mints an ``ek_`` secret bound to the calling key, a model and a session config, short-lived
and single-use, so a browser never holds a gateway key. Stored by its SHA-256 only, in the
security store, and deleted by the read that uses it."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from ..errors import GatewayError, bad_request
from ..http import Request, Response, json_response
from ..ports import Clock, SecurityStoreClient
from ..security import limits as input_limits
from ..security.access import AccessControl, Principal
from .settings import RealtimeSettings

PREFIX = "ek_"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def session_update(session: dict[str, Any]) -> str | None:
    """The ``session.update`` that applies a secret's session config upstream (None: nothing
    beyond the model to apply)."""
    config = {k: v for k, v in session.items() if k != "model"}
    if not set(config) - {"type"}:
        return None
    config.setdefault("type", "realtime")
    return json.dumps({"type": "session.update", "session": config}, separators=(",", ":"))


class ClientSecrets:
    def __init__(self, settings: RealtimeSettings, clock: Clock, access: AccessControl,
                 store: SecurityStoreClient | None, max_json_depth: int) -> None:
        self._settings = settings
        self._clock = clock
        self._access = access
        self._store = store
        self._max_json_depth = max_json_depth

    async def _call(self, op: str, args: dict[str, Any]) -> Any:
        if self._store is None:
            raise GatewayError(503, "Realtime client secrets need the security store, which is not configured.",
                               type="api_error", code="secret_store_unavailable")
        return await self._store.call(op, args)

    async def mint(self, request: Request, principal: Principal, check_model: Any) -> Response:
        """``{"expires_after": {"anchor": "created_at", "seconds": N}, "session": {"type":
        "realtime", "model": ...}}`` -> ``{"value": "ek_...", "expires_at", "session"}``."""
        body = input_limits.parse_json(request.body or b"{}", self._max_json_depth)
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.", code="invalid_json")
        session = body.get("session") if body.get("session") is not None else {}
        expires = body.get("expires_after") if body.get("expires_after") is not None else {}
        if not isinstance(session, dict) or not isinstance(expires, dict):
            raise bad_request("'session' and 'expires_after' must be objects.", code="invalid_request")
        model = session.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("session.model is required: the secret is bound to one model.", param="session.model",
                              code="missing_model")
        seconds = expires.get("seconds", self._settings.client_secret_seconds)
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 10 <= seconds <= 7200:
            raise bad_request("expires_after.seconds must be an integer from 10 to 7200.",
                              param="expires_after.seconds", code="invalid_expiry")
        check_model(principal, model)  # unknown or not allowed: now, not at the browser's connect
        value = PREFIX + secrets.token_urlsafe(24)
        expires_at = int(self._clock.now() + min(seconds, self._settings.client_secret_seconds))
        await self._call("realtime.secrets.put", {"digest": _digest(value), "expires_at": float(expires_at),
                                                  "record": {"key_id": principal.key_id, "model": model,
                                                             "session": session}})
        return json_response({"value": value, "expires_at": expires_at,
                              "session": {"type": "realtime", "object": "realtime.session", **session}})

    async def redeem(self, token: str, path: str) -> tuple[Principal, str, dict[str, Any]]:
        """(the key's principal, the bound model, the session config); once, then 401."""
        record = await self._call("realtime.secrets.take", {"digest": _digest(token)})
        if not isinstance(record, dict):
            raise GatewayError(401, "This client secret is unknown, expired or already used.",
                               type="authentication_error", code="invalid_client_secret")
        principal = await self._access.principal_by_id(str(record.get("key_id")), path)
        if principal is None:
            raise GatewayError(401, "The key this client secret was made for can no longer be used.",
                               type="authentication_error", code="invalid_client_secret")
        session = record.get("session")
        return principal, str(record.get("model") or ""), session if isinstance(session, dict) else {}
