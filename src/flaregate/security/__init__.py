"""Who may call and what a request may carry: gateway keys and access, the admin credential
and API, request signing, privacy, input limits, CORS, the request gate, the security store, webhooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .access import AccessControl, Principal
    from .admin import require_admin
    from .admin_api import AdminApi
    from .gate import SecurityGate
    from .keys import KeyRing
    from .privacy import redact
    from .store import SecurityStore
    from .webhooks import WebhookDispatcher

_EXPORTS = {
    "AccessControl": "access",
    "Principal": "access",
    "KeyRing": "keys",
    "AdminApi": "admin_api",
    "require_admin": "admin",
    "SecurityGate": "gate",
    "SecurityStore": "store",
    "WebhookDispatcher": "webhooks",
    "redact": "privacy",
}
__all__ = ["AccessControl", "Principal", "KeyRing", "AdminApi", "require_admin", "SecurityGate", "SecurityStore", "WebhookDispatcher", "redact"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
