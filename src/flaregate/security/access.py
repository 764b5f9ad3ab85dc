"""Who is calling, and what may they do: gateway keys from configuration and from the
security store, with per-key policy (allowed models and routes, rate-limit policy name,
budget, expiry).

Stored keys are looked up by the SHA-256 digest of the presented key; the plain key goes
no further than this module. Before any lookup, a presented token must be a configured key
(checked in memory) or shaped like a stored key (``fg-`` and 43 URL-safe base64
characters, as :func:`new_key` makes them): anything else is refused without asking the
store, so junk tokens cost no Durable Object call. Lookups are cached per process (per
isolate on the edge) for ``KEY_CACHE_SECONDS`` in two bounded LRUs: found records in one,
misses in a smaller one of their own, so well-shaped junk can only evict other junk. A
revocation made through this process's admin API clears the cache at once, so locally it
takes effect immediately; on the edge other isolates see it within that many seconds.

A key in a team (``policy.team_id``, ``teams.py``) carries its team in its principal: the
team record is looked up by id after the key and cached per isolate the same
``KEY_CACHE_SECONDS`` (one cache entry serves all the team's keys), so a change to a team,
or a key moved between teams, binds other isolates within that bound too. A key whose team
is gone is refused (403 ``team_not_found``), never let loose of its team's limits.

Every failed authentication counts against the caller's network (``auth_throttle.py``);
while that network is throttled a token is refused with the 429 before any lookup unless it
is a configured key or a stored key in the positive cache (both checked in memory).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictStr

from ..errors import GatewayError, unauthorized
from ..http import Request
from ..metadata.tags import PolicyTags
from ..ports import BackgroundTasks, Clock, SecurityStoreClient
from .auth_throttle import AuthFailureThrottle, refusal
from .keys import KeyRing
from .permissions import Permissions, all_allow
from .teams import Team, merged_tags

KEY_PREFIX = "fg-"
VISIBLE_PREFIX_CHARS = 7  # "fg-" and four characters, shown in listings to tell keys apart
STORED_KEY_SHAPE = re.compile(r"fg-[A-Za-z0-9_-]{43}")  # KEY_PREFIX + token_urlsafe(32)
_CACHE_LIMIT = 10_000  # found records (real keys: revoked and expired ones included)
_NEGATIVE_CACHE_LIMIT = 1_000  # misses; junk evicts junk, never a found record
_TEAM_CACHE_LIMIT = 10_000
LAST_USED_RESOLUTION_SECONDS = 60  # last_used_at is this coarse: no store write per request
log = logging.getLogger("flaregate.security")


class KeyPolicy(Permissions):
    """What a stored key may do (its permissions, permissions.py, and the rest); None means
    unrestricted."""

    model_config = ConfigDict(extra="forbid")

    rate_limit_policy: StrictStr | None = Field(default=None, max_length=64)
    budget_usd: float | None = Field(default=None, ge=0)
    tags: PolicyTags = None  # default request tags (metadata/tags.py bounds)
    priority: Literal["low", "normal", "high"] | None = None  # load shedding: who is refused first
    private: bool | None = None  # true: the request log never keeps this key's bodies (LOG_BODIES)
    team_id: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,64}$")  # security/teams.py
    semantic_cache: bool | None = None  # false: this key's requests use the exact cache only


@dataclass(slots=True)
class Principal:
    key_id: str
    source: str  # "config" or "store"
    name: str = ""
    policy: KeyPolicy = field(default_factory=KeyPolicy)
    expires_at: float | None = None
    team: Team | None = None  # the key's team as it was looked up (cached with the key)

    @property
    def team_id(self) -> str | None:
        return None if self.team is None else self.team.id

    @property
    def tags(self) -> dict[str, str] | None:
        """Default request tags: the team's, then the key's where the team sets none."""
        return merged_tags(self.team, self.policy.tags)

    def _holders(self) -> tuple[Permissions, ...]:
        return (self.policy,) if self.team is None else (self.policy, self.team)

    def allows_model(self, model: str) -> bool:
        return all_allow(self._holders(), "allows_model", model)

    def allows_route(self, path: str) -> bool:
        return all_allow(self._holders(), "allows_route", path)

    def allows_mcp_server(self, server: str) -> bool:
        return all_allow(self._holders(), "allows_mcp_server", server)

    def allows_mcp_tool(self, server: str, tool: str) -> bool:
        return all_allow(self._holders(), "allows_mcp_tool", server, tool)


def digest_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str, str, str]:
    """A fresh gateway key: (plain key, key id, digest, visible prefix)."""
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    digest = digest_hex(plain)
    return plain, "key_" + digest[:16], digest, plain[:VISIBLE_PREFIX_CHARS]


def stored_key_shaped(token: str) -> bool:
    """Could ``token`` be a stored key? (Configured keys may have any shape.)"""
    return STORED_KEY_SHAPE.fullmatch(token) is not None


class _Expiring:
    """An LRU of values with an expiry each, bounded in entries (the oldest use goes first)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, now: float) -> tuple[bool, Any]:
        item = self._items.get(key)
        if item is None:
            return False, None
        if item[0] <= now:
            del self._items[key]
            return False, None
        self._items.move_to_end(key)
        return True, item[1]

    def put(self, key: str, value: Any, expires_at: float) -> None:
        self._items[key] = (expires_at, value)
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def pop(self, key: str) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


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
                 cache_seconds: float, throttle: AuthFailureThrottle | None = None,
                 tasks: BackgroundTasks | None = None) -> None:
        self._keys = keys
        self._store = store
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._found = _Expiring(_CACHE_LIMIT)  # digest -> the store's record
        self._missing = _Expiring(_NEGATIVE_CACHE_LIMIT)  # digest -> None: no such key
        self._teams = _Expiring(_TEAM_CACHE_LIMIT)  # team id -> its record (or None), as long as keys
        self._tasks = tasks
        self._touched: dict[str, float] = {}  # key id -> the minute its last use was written
        # Failed authentications per network; the gateway's own is handed over by AdminApi.
        self.throttle = throttle if throttle is not None else AuthFailureThrottle(clock=clock)

    async def authenticate(self, request: Request) -> Principal:
        """The caller's principal, or a 401/403/429 GatewayError. Checks expiry and the route."""
        token = presented_token(request)
        if not self._keys and self._store is None:
            raise unauthorized("No gateway keys are configured; set the FLAREGATE_API_KEYS secret.")
        if not token:
            raise self._failed(request, "Missing API key: send 'Authorization: Bearer <gateway key>'.")
        ident = self._keys.find(token)
        if ident is not None:
            return Principal(ident, "config")
        digest = digest_hex(token)
        throttled = self.throttle.retry_after(request)
        if throttled is not None:  # only a key this process knows is good gets in, without a lookup
            hit, record = self._found.get(digest, self._clock.monotonic())
            if not hit:
                raise refusal(throttled)
        elif not stored_key_shaped(token):  # no stored key looks like this: the store is not asked
            raise self._failed(request, "Incorrect API key provided.")
        else:
            record = await self._lookup(digest)
        if record is None or not hmac.compare_digest(record["digest"], digest):
            raise self._failed(request, "Incorrect API key provided.")
        if record["revoked_at"] is not None:
            raise self._failed(request, "This API key has been revoked.")
        if record["expires_at"] is not None and record["expires_at"] <= self._clock.now():
            raise self._failed(request, "This API key has expired.")
        if record.get("secret_expires_at") is not None and record["secret_expires_at"] <= self._clock.now():
            raise self._failed(request, "This API key was rotated and its grace period has ended; use the new key.")
        principal = await self._principal(record)
        if not principal.allows_route(request.path):
            raise forbidden(f"This API key may not use {request.path}.", "route_not_allowed")
        self._note_use(principal.key_id, digest)
        return principal

    def _note_use(self, key_id: str, digest: str) -> None:
        """A key's last use, to the minute: at most one write per key, minute and isolate."""
        if self._tasks is None or self._store is None:
            return
        minute = float(int(self._clock.now() // LAST_USED_RESOLUTION_SECONDS) * LAST_USED_RESOLUTION_SECONDS)
        if self._touched.get(key_id) == minute:
            return
        if len(self._touched) >= _CACHE_LIMIT:
            self._touched.clear()
        self._touched[key_id] = minute
        self._tasks.run(self._touch(key_id, minute, digest))

    async def _touch(self, key_id: str, minute: float, digest: str) -> None:
        assert self._store is not None
        try:  # the digest places the write where the key's record is (security/sharded_store.py)
            await self._store.call("keys.touch", {"used": {key_id: minute}, "digest": digest})
        except Exception:
            log.warning("could not record the last use of key %s", key_id, exc_info=True)

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
        try:
            principal = await self._principal(record)
        except GatewayError:
            return None
        return principal if principal.allows_route(path) else None

    async def _principal(self, record: dict[str, Any]) -> Principal:
        """A stored key's principal, with its team (a key whose team is gone is refused: what
        the team bounded must not come loose)."""
        policy = KeyPolicy.model_validate(record["policy"])
        team = None
        if policy.team_id is not None:
            team = await self._team(policy.team_id)
            if team is None:
                raise forbidden("This API key's team no longer exists.", "team_not_found")
        return Principal(record["id"], "store", record["name"], policy, record["expires_at"], team)

    async def _team(self, team_id: str) -> Team | None:
        now = self._clock.monotonic()
        hit, team = self._teams.get(team_id, now)
        if hit:
            return team
        assert self._store is not None
        record = await self._store.call("teams.get", {"id": team_id})
        team = None if record is None else Team.model_validate(record)
        if self._cache_seconds > 0:
            self._teams.put(team_id, team, now + self._cache_seconds)
        return team

    def _failed(self, request: Request, message: str) -> GatewayError:
        """The 401 of a failed authentication, counted against its network (the 429 once it
        is throttled)."""
        return self.throttle.refuse_or_count(request, unauthorized(message))

    @staticmethod
    def check_model(principal: Principal, model: str) -> None:
        if not principal.allows_model(model):
            raise forbidden(f"This API key may not use the model '{model[:256]}'.", "model_not_allowed", "model")

    def forget(self) -> None:
        """Drop cached lookups (after a revocation or creation through this process)."""
        self._found.clear()
        self._missing.clear()
        self._teams.clear()

    async def _lookup(self, digest: str) -> dict[str, Any] | None:
        if self._store is None:
            return None
        now = self._clock.monotonic()
        for cache in (self._found, self._missing):
            hit, record = cache.get(digest, now)
            if hit:
                return record
        record = await self._store.call("keys.find", {"digest": digest})
        if self._cache_seconds > 0:
            expires_at = now + self._cache_seconds
            if record is None:
                self._missing.put(digest, None, expires_at)
            else:
                self._missing.pop(digest)
                self._found.put(digest, record, expires_at)
        return record
