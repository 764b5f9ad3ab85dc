"""``/admin/ratelimits/{key_id}``: read a gateway key's current usage (GET) or reset it
(DELETE, optionally ``?policy=NAME``). Guarded by ``FLAREGATE_ADMIN_KEY`` as a Bearer token.

A key id is ``key_`` + the first 16 hex digits of the key's SHA-256 (see ``flaregate.auth``),
so an operator can name a key without the key travelling again. The view covers every
policy scoped by key (with its model, user and network rows); policies scoped only by
network or model live in objects of their own and are not listed here.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from ..config import Settings
from ..errors import GatewayError
from ..http import Request, Response, json_response
from .enforcer import Limits

PREFIX = "/admin/ratelimits/"
_KEY_ID = re.compile(r"^key_[0-9a-f]{16}$")
_POLICY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def require_admin(settings: Settings, request: Request) -> None:
    """Raise unless the request carries the admin secret (compared in constant time)."""
    if settings.admin_key is None:
        raise GatewayError(403, "The admin API is disabled: set the FLAREGATE_ADMIN_KEY secret.",
                           type="permission_error", code="admin_disabled")
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    expected = hashlib.sha256(settings.admin_key.get_secret_value().encode()).digest()
    presented = hashlib.sha256(token.strip().encode()).digest()
    if scheme.lower() != "bearer" or not hmac.compare_digest(expected, presented):
        raise GatewayError(401, "Missing or incorrect admin key: send 'Authorization: Bearer <admin key>'.",
                           type="authentication_error", code="invalid_admin_key")


class RateLimitAdmin:
    def __init__(self, settings: Settings, limits: Limits) -> None:
        self._settings = settings
        self._limits = limits

    async def handle(self, request: Request) -> Response:
        require_admin(self._settings, request)
        key_id = request.path[len(PREFIX):]
        if not _KEY_ID.match(key_id):
            raise GatewayError(404, "Unknown key id: expected key_ followed by 16 hex digits.",
                               code="invalid_key_id", param="key_id")
        if request.method == "GET":
            usage = await self._unavailable_as_503(self._limits.usage(key_id))
            return json_response({"object": "ratelimit.usage", "key_id": key_id, "limits": usage.get("limits", [])})
        if request.method == "DELETE":
            policy = request.query.get("policy", "")
            if policy and not _POLICY.match(policy):
                raise GatewayError(400, "Invalid policy name.", code="invalid_value", param="policy")
            reset = await self._unavailable_as_503(self._limits.reset(key_id, policy))
            return json_response({"object": "ratelimit.reset", "key_id": key_id, "policy": policy or None,
                                  "reset": reset.get("reset", 0)})
        raise GatewayError(405, f"Method {request.method} is not allowed on {PREFIX}{{key_id}}.",
                           code="method_not_allowed", headers={"allow": "GET, DELETE"})

    @staticmethod
    async def _unavailable_as_503(call):
        try:
            answer = await call
        except Exception:
            raise GatewayError(503, "The rate limiter is unavailable; retry shortly.", type="api_error",
                               code="rate_limiter_unavailable", headers={"retry-after": "1"}) from None
        return answer if isinstance(answer, dict) else {}
