"""The admin secret: one check, shared by every ``/admin/*`` endpoint of every module and by
the operator's observability endpoints (``/ws``, ``/metrics``, ``/v1/analytics``).

The operator sets ``FLAREGATE_ADMIN_KEY``; a request presents it as
``Authorization: Bearer <admin key>`` or ``X-Admin-Key: <admin key>``. Without the setting
the admin API is closed (403). Request signing, required on ``/admin/`` by default, is
checked before routing by :mod:`flaregate.security.signing`; this module only answers "is this the
operator?".

A browser cannot set headers on a WebSocket, so with ``browser=True`` (the observability
endpoints, never ``/admin/*``) the key is also accepted as a ``?token=`` query parameter
or as a WebSocket subprotocol ``bearer.<key>`` offered next to ``flaregate.v1``.

The observer key (``FLAREGATE_OBSERVER_KEY``, optional) is read-only: it opens those
observability endpoints (``/ws``, ``/metrics``, ``/v1/analytics``, the request log without
bodies) and nothing under ``/admin/`` (a 403 ``admin_key_required`` there). Either key is
presented the same ways.

A failed check counts against the caller's network (``auth_throttle.py``): past the limit
the answer is the 429 ``too_many_auth_failures`` until the window ends, for every key but
the two checked here (in memory, so a throttled network's operator still gets in).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from pydantic import SecretStr

from ..errors import GatewayError
from ..http import Request
from .auth_throttle import throttle_for

if TYPE_CHECKING:
    from ..config import Settings

TOKEN_SUBPROTOCOL_PREFIX = "bearer."


def offered_subprotocols(request: Request) -> list[str]:
    header = request.headers.get("sec-websocket-protocol") or ""
    return [item.strip() for item in header.split(",") if item.strip()]


def presented_admin_key(request: Request, browser: bool = False) -> str | None:
    auth = request.headers.get("authorization") or ""
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    header = (request.headers.get("x-admin-key") or "").strip()
    if header or not browser:
        return header or None
    for item in offered_subprotocols(request):
        if item.startswith(TOKEN_SUBPROTOCOL_PREFIX) and len(item) > len(TOKEN_SUBPROTOCOL_PREFIX):
            return item[len(TOKEN_SUBPROTOCOL_PREFIX):]
    return request.query.get("token") or None


def _matches(presented: str | None, secret: SecretStr | None) -> bool:
    if secret is None or not presented:
        return False
    # Compare digests so neither length nor content leaks through timing.
    expected = hashlib.sha256(secret.get_secret_value().encode()).digest()
    return hmac.compare_digest(expected, hashlib.sha256(presented.encode()).digest())


def is_admin(request: Request, settings: Settings, browser: bool = False) -> bool:
    return _matches(presented_admin_key(request, browser), settings.admin_key)


def is_observer(request: Request, settings: Settings, browser: bool = True) -> bool:
    """The read-only observer key (never the admin key: that is :func:`is_admin`)."""
    return _matches(presented_admin_key(request, browser), settings.security.observer_key)


def _refused(request: Request, settings: Settings, browser: bool, who: str) -> GatewayError:
    """The 401 of a missing or wrong key, or the 429 while the network is throttled."""
    if not presented_admin_key(request, browser):
        how = (f"'Authorization: Bearer <{who}>', '?token=' or the WebSocket subprotocol "
               f"'bearer.<{who}>'" if browser else f"'Authorization: Bearer <{who}>'")
        error = GatewayError(401, f"Missing {who}: send {how}.", type="authentication_error",
                             code="invalid_admin_key")
    else:
        error = GatewayError(401, f"Incorrect {who} provided.", type="authentication_error",
                             code="invalid_admin_key")
    return throttle_for(settings).refuse_or_count(request, error)


SCOPED_PREFIX = "fgc-"  # scoped admin credentials (admin_scopes.py)


def require_admin(request: Request, settings: Settings, browser: bool = False) -> None:
    """Raise an OpenAI-style 401/403/429 GatewayError unless the request carries the admin key."""
    if settings.admin_key is None:
        raise GatewayError(403, "The admin API is disabled: set the FLAREGATE_ADMIN_KEY secret.",
                           type="permission_error", code="admin_disabled")
    if is_admin(request, settings, browser):
        return
    if is_observer(request, settings, browser):
        raise GatewayError(403, "The observer key is read-only; this needs the admin key.",
                           type="permission_error", code="admin_key_required")
    if (presented_admin_key(request, browser) or "").startswith(SCOPED_PREFIX):
        # A scoped credential (checked, where it is accepted, by admin_scopes.identify).
        raise GatewayError(403, "This endpoint needs the full admin key; a scoped admin credential cannot use it.",
                           type="permission_error", code="admin_key_required")
    raise refused_admin(request, settings, browser)


def refused_admin(request: Request, settings: Settings, browser: bool = False) -> GatewayError:
    """The 401 of a missing or wrong admin key (the 429 while the network is throttled)."""
    return _refused(request, settings, browser, "admin key")


# -- the operator's views: /ws, /metrics, /v1/analytics, /v1/logs --------------------

SUBPROTOCOL = "flaregate.v1"


def authorize_observer(request: Request, settings: Settings) -> str | None:
    """Raise a 401/403/429 GatewayError unless the admin key or the observer key is
    presented. Returns the subprotocol a WebSocket handshake must select (or None when none
    was offered)."""
    if settings.admin_key is None and settings.security.observer_key is None:
        raise GatewayError(403, "The admin API is disabled: set the FLAREGATE_ADMIN_KEY secret.",
                           type="permission_error", code="admin_disabled")
    if not (is_admin(request, settings, browser=True) or is_observer(request, settings)):
        raise _refused(request, settings, True, "admin or observer key")
    return SUBPROTOCOL if SUBPROTOCOL in offered_subprotocols(request) else None
