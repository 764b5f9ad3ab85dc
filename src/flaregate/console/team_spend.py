"""``GET /admin/teams/{team_id}/spend``: one team's spend report, for the full admin, a
read-only credential and that team's own admin (``security/admin_scopes.py``): the team's
row per window (requests, errors, tokens, cost, cache savings) and those of its current keys.

The team's row counts every request made while a key was in the team; the key rows list the
keys in it now (a key moved out takes its key row with it, its spend stays in the team's)."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from ..errors import GatewayError, not_found
from ..http import Request, Response, json_response
from ..ports import MetricsHubClient, SecurityStoreClient
from ..routes import Route
from ..security.admin_scopes import identify

if TYPE_CHECKING:
    from ..config import Settings

_TEAM_ID = re.compile(r"[A-Za-z0-9_]{1,64}")
_WINDOWS = ("1h", "24h", "30d", "1y")
HUB_TIMEOUT_SECONDS = 5.0


class TeamSpend:
    def __init__(self, settings: Settings, hub: MetricsHubClient, store: SecurityStoreClient | None) -> None:
        self._settings = settings
        self._hub = hub
        self._store = store

    def routes(self) -> list[Route]:
        return [Route("/admin/teams/{team_id}/spend", {"GET": self._spend}, "admin",
                      "A team's spend per window, and its keys' (?window=)")]

    async def _spend(self, request: Request, out: dict[str, str]) -> Response:
        team_id = request.params["team_id"]
        if not _TEAM_ID.fullmatch(team_id):
            raise not_found("Unknown team id.", code="team_not_found", param="team_id")
        if self._store is None:
            raise GatewayError(501, "This host has no security store; teams are unavailable.",
                               type="api_error", code="admin_unavailable")
        (await identify(request, self._settings, self._store)).require_team(team_id)
        window = request.query.get("window") or None
        if window is not None and window not in _WINDOWS:
            raise GatewayError(400, f"Unknown window; use one of {', '.join(_WINDOWS)}.", code="invalid_value",
                               param="window")
        if await self._store.call("teams.get", {"id": team_id}) is None:
            raise not_found(f"No team with id {team_id}.", code="team_not_found")
        members = {k["id"] for k in await self._store.call("keys.list", {})
                   if k["policy"].get("team_id") == team_id}
        try:
            data = await asyncio.wait_for(self._hub.analytics(window), HUB_TIMEOUT_SECONDS)
        except Exception:
            raise GatewayError(503, "The metrics hub is unavailable; try again shortly.", type="api_error",
                               code="metrics_unavailable", headers={"retry-after": "5"}) from None
        from .spend_report import FIELDS, report  # on first use: keeps cold starts lean

        teams = report(data, "team", ())["windows"]
        keys = report(data, "key", ())["windows"]
        empty = dict.fromkeys(FIELDS, 0)
        windows: dict[str, Any] = {
            name: {"window": name, "start": w["start"], "end": w["end"],
                   "team": w["groups"].get(team_id, empty),
                   "keys": {k: row for k, row in keys[name]["groups"].items() if k in members}}
            for name, w in teams.items()}
        return json_response({"team_id": team_id, "windows": windows}, headers={"cache-control": "no-store"})
