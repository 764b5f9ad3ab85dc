"""CORS for browser clients: off unless ``CORS_ALLOW_ORIGINS`` lists origins (or ``*``).

When on, preflights (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed
origin get 204 with the allowed methods and headers; every response to an allowed origin
carries ``Access-Control-Allow-Origin`` and exposes the gateway's own headers. Credentials
(cookies) are never allowed: clients authenticate with headers.
"""

from __future__ import annotations

from ..errors import GatewayError
from ..http import Request, Response
from .settings import SecuritySettings

ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOW_HEADERS = ("authorization, content-type, x-request-id, traceparent, x-admin-key, "
                 "x-flaregate-timestamp, x-flaregate-nonce, x-flaregate-signature")
EXPOSE_HEADERS = ("x-request-id, server-timing, retry-after, x-flaregate-cache, x-flaregate-provider, "
                  "x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests")


def _allowed(origin: str, settings: SecuritySettings) -> bool:
    allowed = settings.cors_allow_origins
    return "*" in allowed or origin.rstrip("/").lower() in {o.rstrip("/").lower() for o in allowed}


def preflight(request: Request, settings: SecuritySettings) -> Response | None:
    """The answer to a CORS preflight, or None when the request is not one (or CORS is off)."""
    if not settings.cors_allow_origins or request.method != "OPTIONS":
        return None
    origin = request.headers.get("origin")
    if not origin or "access-control-request-method" not in request.headers:
        return None
    if not _allowed(origin, settings):
        raise GatewayError(403, "This origin is not allowed by the gateway's CORS settings.",
                           type="permission_error", code="cors_origin_not_allowed")
    return Response(204, {"access-control-allow-methods": ALLOW_METHODS,
                          "access-control-allow-headers": ALLOW_HEADERS,
                          "access-control-max-age": str(settings.cors_max_age_seconds)})


def apply(request: Request, response: Response, settings: SecuritySettings) -> None:
    origin = request.headers.get("origin")
    if not settings.cors_allow_origins or not origin or not _allowed(origin, settings):
        return
    response.headers["access-control-allow-origin"] = "*" if "*" in settings.cors_allow_origins else origin
    response.headers["access-control-expose-headers"] = EXPOSE_HEADERS
    response.headers["vary"] = "Origin"
