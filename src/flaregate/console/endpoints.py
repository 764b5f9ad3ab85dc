"""The operator endpoints: ``GET /metrics`` (Prometheus), ``GET /v1/analytics`` (JSON),
``GET /dashboard`` (the live page, and its files under ``/dashboard/``) and the health part of ``GET /health``.

All data comes from the metrics hub through its client port, so both hosts serve the
same thing. A hub that is down or failing gives 503 here and ``"health": null`` in
/health; it never turns into a 500 or touches the API endpoints.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import GatewayError
from ..http import Request, Response, json_response
from ..observability.prometheus import CONTENT_TYPE
from ..ports import Clock, MetricsHubClient, SecurityStoreClient
from ..routes import Route, unknown_url
from ..security.admin import authorize_observer, is_admin

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("flaregate.observability")

HUB_TIMEOUT_SECONDS = 5.0
WINDOWS = ("1h", "24h", "30d", "1y")
Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]

_DASHBOARD_HEADERS = {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "connect-src 'self' ws: wss:; img-src data:; frame-ancestors 'none'; base-uri 'none'"
    ),
}


class _Routes(list[Route]):
    """The routes, and, until the gateway builds its route table, also the old
    ``{(method, path): handler}`` of the exact paths (``**observability.routes()``)."""

    def keys(self) -> list[tuple[str, str]]:
        return [(method, r.path) for r in self if not r.params for method in r.methods]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):
            method, path = key
            return next(r.methods[method] for r in self if r.path == path)
        return super().__getitem__(key)


def _hub_unavailable() -> GatewayError:
    return GatewayError(503, "The metrics hub is unavailable; try again shortly.", type="api_error",
                        code="metrics_unavailable", headers={"retry-after": "5"})


class Observability:
    def __init__(self, settings: Settings, hub: MetricsHubClient, clock: Clock, changes: Callable[[], int],
                 store: SecurityStoreClient | None = None) -> None:
        self._settings = settings
        self._hub = hub
        self._store = store  # teams' and keys' budgets beside their spend reports
        # /health's hub part, kept for one metrics tick while this process (isolate) has
        # sent the hub nothing new: on the edge each read is a Durable Object call, and the
        # hub's own score is refreshed per tick anyway. ``changes`` counts what this
        # process recorded or published (Analytics.changes); a change refetches at once.
        self._clock = clock
        self._changes = changes
        self._health: tuple[float, int, dict[str, Any]] | None = None

    def authorize(self, request: Request) -> str | None:
        """The admin or observer key (security/admin.py); returns the WebSocket subprotocol
        to select."""
        return authorize_observer(request, self._settings)

    def routes(self) -> _Routes:
        return _Routes([
            Route("/metrics", {"GET": self._metrics}, "observer", "Prometheus metrics (lifetime counters)"),
            Route("/v1/analytics", {"GET": self._analytics}, "observer",
                  "Analytics windows as JSON; spend reports with ?group_by=team|key|model|provider|tag:<name>, ?format=csv"),
            Route("/dashboard", {"GET": self._dashboard}, "public",
                  "The live dashboard page (its data needs the admin or observer key)"),
            Route("/dashboard/{file}", {"GET": self._dashboard_file}, "public",
                  "The dashboard's stylesheet and scripts"),
            Route("/v1/logs", {"GET": self._logs}, "observer", "The request log: a page of records"),
            Route("/v1/logs/{request_id}", {"GET": self._log}, "observer", "One request's log record"),
        ])

    def route(self, request: Request) -> Handler | None:
        """``GET /v1/logs/{request_id}`` (the one prefix route here). Superseded by
        :meth:`routes` once the gateway dispatches through its route table."""
        return self._log if request.method == "GET" and request.path.startswith("/v1/logs/") else None

    async def _call(self, make: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await asyncio.wait_for(make(), HUB_TIMEOUT_SECONDS)
        except Exception:
            log.warning("metrics hub call failed", exc_info=True)
            raise _hub_unavailable() from None

    async def _metrics(self, request: Request, out: dict[str, str]) -> Response:
        self.authorize(request)
        text = await self._call(self._hub.prometheus)
        return Response(200, {"content-type": CONTENT_TYPE, "cache-control": "no-store"}, text.encode())

    async def _analytics(self, request: Request, out: dict[str, str]) -> Response:
        self.authorize(request)
        window = request.query.get("window") or None
        if window is not None and window not in WINDOWS:
            raise GatewayError(400, f"Unknown window {window[:20]!r}; use one of {', '.join(WINDOWS)}.",
                               code="invalid_value", param="window")
        group_by = request.query.get("group_by") or None
        form = request.query.get("format") or "json"
        if form not in ("json", "csv"):
            raise GatewayError(400, "format must be json or csv.", code="invalid_value", param="format")
        if group_by is None and form == "csv":
            raise GatewayError(400, "format=csv needs group_by (team, key, model, provider or tag:<name>).",
                               code="invalid_value", param="group_by")
        if group_by is None:
            data = await self._call(lambda: self._hub.analytics(window))
            return json_response(data, headers={"cache-control": "no-store"})
        # Imported on first use: keeps cold starts lean.
        from .spend_report import budgets, check_group_by, report, to_csv

        group_by = check_group_by(group_by)
        data = await self._call(lambda: self._hub.analytics(window))
        spend = report(data, group_by, self._settings.report_tags)
        if form == "json" and group_by in ("team", "key") and self._store is not None:
            try:
                spend["budgets"] = await asyncio.wait_for(budgets(self._store, group_by, self._clock.now()),
                                                          HUB_TIMEOUT_SECONDS)
            except Exception:  # the spend stands without them: said, not a 5xx
                log.warning("security store unavailable for the report's budgets", exc_info=True)
                spend["budgets"] = None
        if form == "csv":
            name = f"flaregate-spend-{group_by.replace(':', '-')}.csv"
            return Response(200, {"content-type": "text/csv; charset=utf-8", "cache-control": "no-store",
                                  "content-disposition": f'attachment; filename="{name}"'},
                            to_csv(spend).encode())
        return json_response(spend, headers={"cache-control": "no-store"})

    async def _logs(self, request: Request, out: dict[str, str]) -> Response:
        from .request_log_endpoints import logs  # imported on first use: keeps cold starts lean

        self.authorize(request)
        return await logs(request, lambda params: self._call(lambda: self._hub.logs(params)))

    async def _log(self, request: Request, out: dict[str, str]) -> Response:
        from .request_log_endpoints import one_log

        self.authorize(request)
        # Bodies (LOG_BODIES) for the admin key only: the observer key gets the record without them.
        return await one_log(request, lambda params: self._call(lambda: self._hub.logs(params)),
                             bodies=is_admin(request, self._settings, browser=True))

    async def _dashboard(self, request: Request, out: dict[str, str]) -> Response:
        from .dashboard import PAGE, read  # imported on first use: keeps cold starts lean

        return Response(200, dict(_DASHBOARD_HEADERS), read(PAGE))

    async def _dashboard_file(self, request: Request, out: dict[str, str]) -> Response:
        from .dashboard import ASSETS, read

        name = request.path[len("/dashboard/"):]
        if name not in ASSETS:
            raise unknown_url(request.path)
        return Response(200, {**_DASHBOARD_HEADERS, "content-type": ASSETS[name]}, read(name))

    async def health(self) -> dict[str, Any]:
        """The part of /health that comes from the hub; never raises."""
        now, seen, cached = self._clock.monotonic(), self._changes(), self._health
        if cached is not None and cached[1] == seen and 0 <= now - cached[0] < self._settings.metrics_tick_seconds:
            return dict(cached[2])
        try:
            snapshot = await asyncio.wait_for(self._hub.health(), HUB_TIMEOUT_SECONDS)
        except Exception:  # not kept: the next call asks the hub again
            log.warning("metrics hub unavailable for /health", exc_info=True)
            return {"health": None, "health_error": "metrics hub unavailable"}
        result: dict[str, Any] = {"health": snapshot.get("health")}
        if snapshot.get("process"):
            result["process"] = snapshot["process"]
        if snapshot.get("exporters"):
            result["exporters"] = snapshot["exporters"]
        if snapshot.get("request_logs"):
            result["request_logs"] = snapshot["request_logs"]
        self._health = (now, seen, result)
        return dict(result)
