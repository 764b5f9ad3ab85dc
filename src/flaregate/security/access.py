"""Who is calling, and what may they do: gateway keys from configuration and from the
security store, with per-key policy (allowed models and routes, rate-limit policy name,
budget, expiry).

Stored keys are looked up by the SHA-256 digest of the presented key; the plain key goes
no further than this module. Lookups are cached per process (per isolate on the edge) for
``KEY_CACHE_SECONDS``: a revocation made through this process's admin API clears the cache
at once, so locally it takes effect immediately; on the edge other isolates see it within
that many seconds.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from ..errors import GatewayError, unauthorized
from ..http import Request
from ..metadata.tags import check_tags
from ..ports import Clock, SecurityStoreClient
from .keys import KeyRing

KEY_PREFIX = "fg-"
VISIBLE_PREFIX_CHARS = 7  # "fg-" and four characters, shown in listings to tell keys apart
_CACHE_LIMIT = 10_000


class KeyPolicy(BaseModel):
    """What a stored key may do; None means unrestricted."""

    model_config = ConfigDict(extra="forbid")

    allowed_models: list[StrictStr] | None = Field(default=None, max_length=256)  # aliases, globs allowed
    allowed_routes: list[StrictStr] | None = Field(default=None, max_length=64)  # paths, globs allowed
    rate_limit_policy: StrictStr | None = Field(default=None, max_length=64)
    budget_usd: float | None = Field(default=None, ge=0)
    tags: dict[StrictStr, StrictStr] | None = None  # default request tags (metadata/tags.py bounds)
    priority: Literal["low", "normal", "high"] | None = None  # load shedding: who is refused first
    private: bool | None = None  # true: the request log never keeps this key's bodies (LOG_BODIES)

    @field_validator("tags")
    @classmethod
    def _bounded_tags(cls, tags: dict[str, str] | None) -> dict[str, str] | None:
        if tags is None:
            return None
        try:
            return check_tags(tags, "tags")
        except GatewayError as exc:
            raise ValueError(exc.message) from None


@dataclass(slots=True)
class Principal:
    key_id: str
    source: str  # "config" or "store"
    name: str = ""
    policy: KeyPolicy = field(default_factory=KeyPolicy)
    expires_at: float | None = None

    def allows_model(self, model: str) -> bool:
        allowed = self.policy.allowed_models
        return allowed is None or any(fnmatch.fnmatchcase(model, pattern) for pattern in allowed)

    def allows_route(self, path: str) -> bool:
        allowed = self.policy.allowed_routes
        return allowed is None or any(fnmatch.fnmatchcase(path, pattern) for pattern in allowed)


def digest_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str, str, str]:
    """A fresh gateway key: (plain key, key id, digest, visible prefix)."""
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    digest = digest_hex(plain)
    return plain, "key_" + digest[:16], digest, plain[:VISIBLE_PREFIX_CHARS]


def presented_token(request: Request) -> str | None:
    """The gateway key of an API request: ``Authorization: Bearer`` only (``/v1/messages``
    turns ``x-api-key`` into that header first). Never a query parameter: URLs end up in
    proxy and server logs, browser history and Referer headers. The admin key of the
    browser-facing operator views is another matter (``admin.presented_admin_key``)."""
    auth = request.headers.get("authorization") or ""
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def forbidden(message: str, code: str, param: str | None = None) -> GatewayError:
    return GatewayError(403, message, type="permission_error", code=code, param=param)


class AccessControl:
    def __init__(self, keys: KeyRing, store: SecurityStoreClient | None, clock: Clock,
                 cache_seconds: float) -> None:
        self._keys = keys
        self._store = store
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    async def authenticate(self, request: Request) -> Principal:
        """The caller's principal, or a 401/403 GatewayError. Checks expiry and the route."""
        token = presented_token(request)
        if not self._keys and self._store is None:
            raise unauthorized("No gateway keys are configured; set the FLAREGATE_API_KEYS secret.")
        if not token:
            raise unauthorized("Missing API key: send 'Authorization: Bearer <gateway key>'.")
        ident = self._keys.find(token)
        if ident is not None:
            return Principal(ident, "config")
        record = await self._lookup(digest_hex(token))
        if record is None or not hmac.compare_digest(record["digest"], digest_hex(token)):
            raise unauthorized("Incorrect API key provided.")
        if record["revoked_at"] is not None:
            raise unauthorized("This API key has been revoked.")
        if record["expires_at"] is not None and record["expires_at"] <= self._clock.now():
            raise unauthorized("This API key has expired.")
        principal = Principal(record["id"], "store", record["name"], KeyPolicy.model_validate(record["policy"]),
                              record["expires_at"])
        if not principal.allows_route(request.path):
            raise forbidden(f"This API key may not use {request.path}.", "route_not_allowed")
        return principal

    async def principal_by_id(self, key_id: str, path: str) -> Principal | None:
        """The principal of a usable key named by its id (admin work done on a key's behalf,
        such as cache warming), or None when no such key may be used now."""
        if self._keys.has_id(key_id):
            return Principal(key_id, "config")
        if self._store is None:
            return None
        record = next((r for r in await self._store.call("keys.list", {}) if r.get("id") == key_id), None)
        if record is None or record.get("revoked_at") is not None:
            return None
        if record.get("expires_at") is not None and record["expires_at"] <= self._clock.now():
            return None
        principal = Principal(record["id"], "store", record["name"], KeyPolicy.model_validate(record["policy"]),
                              record["expires_at"])
        return principal if principal.allows_route(path) else None

    @staticmethod
    def check_model(principal: Principal, model: str) -> None:
        if not principal.allows_model(model):
            raise forbidden(f"This API key may not use the model '{model[:256]}'.", "model_not_allowed", "model")

    def forget(self) -> None:
        """Drop cached lookups (after a revocation or creation through this process)."""
        self._cache.clear()

    async def _lookup(self, digest: str) -> dict[str, Any] | None:
        if self._store is None:
            return None
        now = self._clock.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = await self._store.call("keys.find", {"digest": digest})
        if self._cache_seconds > 0:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = (now + self._cache_seconds, record)
        return record
