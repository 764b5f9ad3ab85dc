"""The admin credential: ``Authorization: Bearer <FLAREGATE_ADMIN_KEY>``.

Without a configured admin key the admin endpoints do not exist (404, ``admin_disabled``),
so a deployment that never set one exposes nothing. The key is compared as a digest, in
constant time, and never appears in logs or error bodies.
"""

from __future__ import annotations

import hashlib
import hmac

from .config import Settings
from .errors import GatewayError
from .http import Headers


def authorize_admin(settings: Settings, headers: Headers) -> None:
    """Raise a GatewayError unless the request carries the admin key."""
    if settings.admin_key is None:
        raise GatewayError(404, "The admin API is disabled; set the FLAREGATE_ADMIN_KEY secret to enable it.",
                           code="admin_disabled")
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    expected = hashlib.sha256(settings.admin_key.get_secret_value().encode()).digest()
    presented = hashlib.sha256(token.strip().encode()).digest()
    if scheme.lower() != "bearer" or not hmac.compare_digest(expected, presented):
        raise GatewayError(401, "Missing or incorrect admin key: send 'Authorization: Bearer <admin key>'.",
                           type="authentication_error", code="invalid_admin_key")
