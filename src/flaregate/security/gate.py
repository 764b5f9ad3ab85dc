"""The checks every request passes before routing, and the last touches on every response:
header limits, CORS preflight, request signatures (required on ``SIGNED_ROUTES``, verified
elsewhere when present), then CORS headers and header sanitisation on the way out. A bad
signature is a failed authentication for the network's throttle (``auth_throttle.py``,
which the gate makes for its gateway)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import GatewayError
from ..http import Request, Response
from ..ports import Clock, SecurityStoreClient
from . import cors, limits
from .admin_scopes import scoped_token
from .auth_throttle import throttle_for
from .signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureProblem,
    check_signature,
    request_query,
)

if TYPE_CHECKING:
    from ..config import Settings

_MEMORY_NONCE_LIMIT = 100_000


class SecurityGate:
    def __init__(self, settings: Settings, clock: Clock, store: SecurityStoreClient | None) -> None:
        self._settings = settings
        self._security = settings.security
        self._clock = clock
        self._store = store
        secret = self._security.signing_secret or settings.admin_key
        self._secret = secret.get_secret_value() if secret is not None else None
        self._nonces: dict[str, float] = {}  # only when the host gives no security store
        self.throttle = throttle_for(settings, clock)  # the gateway's, shared with its key checks

    def requires_signature(self, path: str) -> bool:
        return any(path.startswith(prefix) for prefix in self._security.signed_routes)

    async def screen(self, request: Request) -> Response | None:
        """Raise GatewayError for a request that must go no further; return a response for
        a CORS preflight; None to carry on."""
        limits.check_headers(request.headers, self._security)
        answer = cors.preflight(request, self._security)
        if answer is not None:
            return answer
        required = self.requires_signature(request.path)
        present = any(h in request.headers for h in (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER))
        if required or (present and self._secret is not None):
            await self._verify(request)
        return None

    def finish(self, request: Request, response: Response) -> None:
        cors.apply(request, response, self._security)
        response.headers = limits.sanitize_headers(response.headers)

    async def _verify(self, request: Request) -> None:
        # A scoped admin credential signs with itself (its holder has no other secret);
        # whether it is a real credential is the admin API's check (admin_scopes.identify).
        secret = scoped_token(request) or self._secret
        if secret is None:
            raise GatewayError(403, "This route requires signed requests, but no signing secret is configured "
                               "(FLAREGATE_SIGNING_SECRET or FLAREGATE_ADMIN_KEY).",
                               type="permission_error", code="signing_not_configured")
        now = self._clock.now()
        max_age = self._security.signature_max_age_seconds
        try:
            nonce, ts = check_signature(secret, request.method, request.path, request.headers,
                                        request.body, now, max_age,
                                        request_query(request.raw_query, request.query))
        except SignatureProblem as problem:
            error = GatewayError(401, str(problem), type="authentication_error", code=problem.code)
            raise self.throttle.refuse_or_count(request, error) from None
        # Remember the nonce for as long as its timestamp stays acceptable.
        if not await self._use_nonce(nonce, max(now, ts) + max_age):
            error = GatewayError(401, "This request nonce was already used (replay refused).",
                                 type="authentication_error", code="signature_replayed")
            raise self.throttle.refuse_or_count(request, error)

    async def _use_nonce(self, nonce: str, expires_at: float) -> bool:
        if self._store is not None:
            return bool(await self._store.call("nonces.use", {"nonce": nonce, "expires_at": expires_at}))
        now = self._clock.now()
        if len(self._nonces) >= _MEMORY_NONCE_LIMIT:
            self._nonces = {n: t for n, t in self._nonces.items() if t > now}
            if len(self._nonces) >= _MEMORY_NONCE_LIMIT:
                raise GatewayError(503, "Too many signed requests in flight; retry shortly.",
                                   type="api_error", code="nonce_store_full", headers={"retry-after": "5"})
        if self._nonces.get(nonce, 0.0) > now:
            return False
        self._nonces[nonce] = expires_at
        return True
