"""The admin credential (``FLAREGATE_ADMIN_KEY``) for /ws, /metrics and /v1/analytics.

Gateway keys are given to API clients and do not open these: the hub shows every key's
traffic. A browser cannot set headers on a WebSocket, so besides ``Authorization: Bearer``
the key is accepted as a ``?token=`` query parameter or as a WebSocket subprotocol
``bearer.<key>`` offered next to ``flaregate.v1`` (the server then selects
``flaregate.v1``, never echoing the key). The subprotocol keeps the key out of URLs and
so out of access logs; it requires the key to use token characters only.
"""

from __future__ import annotations

import hashlib
import hmac

from .errors import GatewayError, unauthorized
from .http import Request

SUBPROTOCOL = "flaregate.v1"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."


def offered_subprotocols(request: Request) -> list[str]:
    header = request.headers.get("sec-websocket-protocol") or ""
    return [item.strip() for item in header.split(",") if item.strip()]


class AdminAuth:
    def __init__(self, admin_key: str | None) -> None:
        self._digest = hashlib.sha256(admin_key.encode()).digest() if admin_key else None

    def _presented(self, request: Request) -> str | None:
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        for item in offered_subprotocols(request):
            if item.startswith(TOKEN_SUBPROTOCOL_PREFIX) and len(item) > len(TOKEN_SUBPROTOCOL_PREFIX):
                return item[len(TOKEN_SUBPROTOCOL_PREFIX):]
        return request.query.get("token") or None

    def authorize(self, request: Request) -> str | None:
        """Raise a 401 GatewayError unless the admin key is presented. Returns the
        subprotocol a WebSocket handshake must select (or None when none was offered)."""
        if self._digest is None:
            raise GatewayError(401, "No admin key is configured; set the FLAREGATE_ADMIN_KEY secret.",
                               type="authentication_error", code="admin_key_not_configured")
        token = self._presented(request)
        if not token:
            raise unauthorized("Missing admin key: send 'Authorization: Bearer <admin key>', "
                               "'?token=' or the WebSocket subprotocol 'bearer.<admin key>'.")
        if not hmac.compare_digest(self._digest, hashlib.sha256(token.encode()).digest()):
            raise unauthorized("Incorrect admin key provided.")
        return SUBPROTOCOL if SUBPROTOCOL in offered_subprotocols(request) else None
