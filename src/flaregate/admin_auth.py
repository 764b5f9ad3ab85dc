"""The admin credential for the operator's views: ``/ws``, ``/metrics``, ``/v1/analytics``.

The check itself is :func:`flaregate.admin.require_admin` (one implementation for the
admin API and these); this module adds what a WebSocket handshake needs. Gateway keys are
given to API clients and do not open these views: the hub shows every key's traffic. The
key may come as a header, ``?token=`` or the subprotocol ``bearer.<key>`` offered next to
``flaregate.v1``; the server then selects ``flaregate.v1``, never echoing the key. The
subprotocol keeps the key out of URLs and so out of access logs; it requires the key to
use token characters only. These paths are not under ``/admin/``, so they are not signed
(a browser cannot sign its WebSocket handshake).
"""

from __future__ import annotations

from .admin import TOKEN_SUBPROTOCOL_PREFIX, offered_subprotocols, require_admin
from .config import Settings
from .http import Request

SUBPROTOCOL = "flaregate.v1"
__all__ = ["SUBPROTOCOL", "TOKEN_SUBPROTOCOL_PREFIX", "authorize_observer", "offered_subprotocols"]


def authorize_observer(request: Request, settings: Settings) -> str | None:
    """Raise a 401/403 GatewayError unless the admin key is presented. Returns the
    subprotocol a WebSocket handshake must select (or None when none was offered)."""
    require_admin(request, settings, browser=True)
    return SUBPROTOCOL if SUBPROTOCOL in offered_subprotocols(request) else None
