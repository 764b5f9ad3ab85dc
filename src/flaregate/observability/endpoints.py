"""The operator endpoints: ``GET /metrics`` (Prometheus), ``GET /v1/analytics`` (JSON),
``GET /dashboard`` (the live page) and the health part of ``GET /health``.

All data comes from the metrics hub through its client port, so both hosts serve the
same thing. A hub that is down or failing gives 503 here and ``"health": null`` in
/health; it never turns into a 500 or touches the API endpoints.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import Settings
from ..errors import GatewayError
from ..http import Request, Response, json_response
from ..ports import MetricsHubClient
from ..security.admin import authorize_observer
from .prometheus import CONTENT_TYPE

log = logging.getLogger("flaregate.observability")

HUB_TIMEOUT_SECONDS = 5.0
WINDOWS = ("1h", "24h", "30d")
Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]

_DASHBOARD_HEADERS = {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "content-security-policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self' ws: wss:; img-src data:; frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _hub_unavailable() -> GatewayError:
    return GatewayError(503, "The metrics hub is unavailable; try again shortly.", type="api_error",
                        code="metrics_unavailable", headers={"retry-after": "5"})


class Observability:
    def __init__(self, settings: Settings, hub: MetricsHubClient) -> None:
        self._settings = settings
        self._hub = hub

    def authorize(self, request: Request) -> str | None:
        """The admin check (see admin_auth.py); returns the WebSocket subprotocol to select."""
        return authorize_observer(request, self._settings)

    def routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("GET", "/metrics"): self._metrics,
            ("GET", "/v1/analytics"): self._analytics,
            ("GET", "/dashboard"): self._dashboard,
        }

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
        data = await self._call(lambda: self._hub.analytics(window))
        return json_response(data, headers={"cache-control": "no-store"})

    async def _dashboard(self, request: Request, out: dict[str, str]) -> Response:
        from .dashboard import HTML  # imported on first use: keeps cold starts lean

        return Response(200, dict(_DASHBOARD_HEADERS), HTML.encode())

    async def health(self) -> dict[str, Any]:
        """The part of /health that comes from the hub; never raises."""
        try:
            snapshot = await asyncio.wait_for(self._hub.health(), HUB_TIMEOUT_SECONDS)
        except Exception:
            log.warning("metrics hub unavailable for /health", exc_info=True)
            return {"health": None, "health_error": "metrics hub unavailable"}
        result: dict[str, Any] = {"health": snapshot.get("health")}
        if snapshot.get("process"):
            result["process"] = snapshot["process"]
        return result
