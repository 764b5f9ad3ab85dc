"""The admin secret: one check, shared by every ``/admin/*`` endpoint of every module.

The operator sets ``FLAREGATE_ADMIN_KEY``; a request presents it as
``Authorization: Bearer <admin key>`` or ``X-Admin-Key: <admin key>``. Without the setting
the admin API is closed (403). Request signing, required on ``/admin/`` by default, is
checked before routing by :mod:`flaregate.signing`; this module only answers "is this the
operator?".
"""

from __future__ import annotations

import hashlib
import hmac

from .config import Settings
from .errors import GatewayError
from .http import Request


def presented_admin_key(request: Request) -> str | None:
    auth = request.headers.get("authorization") or ""
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return (request.headers.get("x-admin-key") or "").strip() or None


def is_admin(request: Request, settings: Settings) -> bool:
    if settings.admin_key is None:
        return False
    presented = presented_admin_key(request)
    if not presented:
        return False
    # Compare digests so neither length nor content leaks through timing.
    expected = hashlib.sha256(settings.admin_key.get_secret_value().encode()).digest()
    return hmac.compare_digest(expected, hashlib.sha256(presented.encode()).digest())


def require_admin(request: Request, settings: Settings) -> None:
    """Raise an OpenAI-style 401/403 GatewayError unless the request carries the admin key."""
    if settings.admin_key is None:
        raise GatewayError(403, "The admin API is disabled: set the FLAREGATE_ADMIN_KEY secret.",
                           type="permission_error", code="admin_disabled")
    if not presented_admin_key(request):
        raise GatewayError(401, "Missing admin key: send 'Authorization: Bearer <admin key>'.",
                           type="authentication_error", code="invalid_admin_key")
    if not is_admin(request, settings):
        raise GatewayError(401, "Incorrect admin key provided.", type="authentication_error",
                           code="invalid_admin_key")
