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
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ..errors import GatewayError
from ..http import Request, Response, json_response
from ..ports import SecurityStoreClient
from ..routes import Route
from ..security.admin import require_admin
from ..security.admin_scopes import identify
from .enforcer import Limits

if TYPE_CHECKING:
    from ..config import Settings

PREFIX = "/admin/ratelimits/"
_KEY_ID = re.compile(r"^key_[0-9a-f]{16}$")
_TEAM_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_POLICY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class RateLimitAdmin:
    def __init__(self, settings: Settings, limits: Limits, store: SecurityStoreClient | None = None) -> None:
        self._settings = settings
        self._limits = limits
        self._store = store  # for scoped admin credentials (team usage: its team admin may read it)

    def routes(self) -> list[Route]:
        return [Route(PREFIX + "{key_id}", {"GET": self.usage, "DELETE": self.reset}, "admin",
                      "A gateway key's rate-limit usage (GET) or reset it (DELETE, ?policy=)"),
                Route("/admin/teams/{team_id}/usage", {"GET": self.team_usage}, "admin",
                      "A team's budget usage (its partition: spend per day and month, USD and tokens)"),
                # A key id with more after it is still a wrong key id, not an unknown path.
                Route(PREFIX + "{key_id}/{rest}", {"GET": self.not_a_key, "DELETE": self.not_a_key}, "admin",
                      "Not a key id (404 invalid_key_id)")]

    async def not_a_key(self, request: Request, out: dict[str, str]) -> Response:
        require_admin(request, self._settings)
        raise self._wrong_key_id()

    async def usage(self, request: Request, out: dict[str, str]) -> Response:
        require_admin(request, self._settings)
        return await self._usage(self._key_id(request.params["key_id"]))

    async def team_usage(self, request: Request, out: dict[str, str]) -> Response:
        team_id = request.params["team_id"]
        if not _TEAM_ID.match(team_id):
            raise GatewayError(404, "Unknown team id.", code="team_not_found", param="team_id")
        if self._store is None:
            require_admin(request, self._settings)
        else:
            (await identify(request, self._settings, self._store)).require_team(team_id)
        usage = await self._unavailable_as_503(self._limits.team_usage(team_id))
        return json_response({"object": "ratelimit.usage", "team_id": team_id, "limits": usage.get("limits", [])})

    async def reset(self, request: Request, out: dict[str, str]) -> Response:
        require_admin(request, self._settings)
        return await self._reset(request, self._key_id(request.params["key_id"]))

    @staticmethod
    def _key_id(key_id: str) -> str:
        if not _KEY_ID.match(key_id):
            raise RateLimitAdmin._wrong_key_id()
        return key_id

    @staticmethod
    def _wrong_key_id() -> GatewayError:
        return GatewayError(404, "Unknown key id: expected key_ followed by 16 hex digits.",
                            code="invalid_key_id", param="key_id")

    async def _usage(self, key_id: str) -> Response:
        usage = await self._unavailable_as_503(self._limits.usage(key_id))
        return json_response({"object": "ratelimit.usage", "key_id": key_id, "limits": usage.get("limits", [])})

    async def _reset(self, request: Request, key_id: str) -> Response:
        policy = request.query.get("policy", "")
        if policy and not _POLICY.match(policy):
            raise GatewayError(400, "Invalid policy name.", code="invalid_value", param="policy")
        reset = await self._unavailable_as_503(self._limits.reset(key_id, policy))
        return json_response({"object": "ratelimit.reset", "key_id": key_id, "policy": policy or None,
                              "reset": reset.get("reset", 0)})

    @staticmethod
    async def _unavailable_as_503(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        try:
            answer = await call
        except Exception:
            raise GatewayError(503, "The rate limiter is unavailable; retry shortly.", type="api_error",
                               code="rate_limiter_unavailable", headers={"retry-after": "1"}) from None
        return answer if isinstance(answer, dict) else {}
