"""``/admin/ratelimits/{key_id}``: read a gateway key's current usage (GET) or reset it
(DELETE, optionally ``?policy=NAME``). Guarded like every ``/admin/*`` endpoint: the admin
key (:func:`flaregate.security.admin.require_admin`) and, by default, a signed request.

A key id is ``key_`` + the first 16 hex digits of the key's SHA-256, for configured and
stored keys alike (``GET /admin/keys`` lists the stored ones). The view covers every policy
scoped by key (with its model, user and network rows); policies scoped only by network or
model live in objects of their own and are not listed here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..errors import GatewayError
from ..http import Request, Response, json_response
from ..security.admin import require_admin
from .enforcer import Limits

if TYPE_CHECKING:
    from ..config import Settings

PREFIX = "/admin/ratelimits/"
_KEY_ID = re.compile(r"^key_[0-9a-f]{16}$")
_POLICY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class RateLimitAdmin:
    def __init__(self, settings: Settings, limits: Limits) -> None:
        self._settings = settings
        self._limits = limits

    async def handle(self, request: Request) -> Response:
        require_admin(request, self._settings)
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
