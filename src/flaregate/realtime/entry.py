"""What the gateway holds of the Realtime API from its start: the two paths and their routes.
The rest of the package (admission, relay, metering, client secrets: about 55 KB) is
imported when ``/v1/realtime`` is first upgraded or a client secret first minted, so a
Worker that never sees a Realtime session never loads it (tests/unit/test_import_layers.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import GatewayError
from ..http import Request, Response
from ..routes import Route

if TYPE_CHECKING:
    from ..pipeline.runner import Pipeline
    from ..ports import Clock, SecurityStoreClient
    from .api import Realtime, Session

PATH = "/v1/realtime"
SECRETS_PATH = "/v1/realtime/client_secrets"


class RealtimeEntry:
    def __init__(self, settings: Any, clock: Clock, pipeline: Pipeline, security: SecurityStoreClient | None) -> None:
        self._args = (settings, clock, pipeline, security)
        self._pipeline = pipeline
        self._api: Realtime | None = None

    @property
    def api(self) -> Realtime:
        """The Realtime API, built (and its modules imported) on first use."""
        if self._api is None:
            from .api import Realtime

            self._api = Realtime(*self._args)
        return self._api

    @property
    def loaded(self) -> bool:
        return self._api is not None

    async def open(self, request: Request) -> Session:
        """Admit a session or raise GatewayError (see ``api.Realtime.open``)."""
        return await self.api.open(request)

    def routes(self) -> list[Route]:
        return [
            # Upgraded by the hosts before the table is consulted; a plain GET gets the 426.
            Route(PATH, {"GET": self._without_upgrade}, "key", "Realtime API session (WebSocket)"),
            Route(SECRETS_PATH, {"POST": self._client_secret}, "key",
                  "A short-lived, single-use Realtime client secret for a browser"),
        ]

    async def _without_upgrade(self, request: Request, out: dict[str, str]) -> Response:
        await self._pipeline.access.authenticate(request)
        raise GatewayError(426, "GET /v1/realtime needs a WebSocket upgrade ('Upgrade: websocket').",
                           code="upgrade_required", headers={"upgrade": "websocket"})

    async def _client_secret(self, request: Request, out: dict[str, str]) -> Response:
        return await self.api.client_secret(request, out)
