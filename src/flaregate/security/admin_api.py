"""The admin API for gateway keys and webhooks (``/admin/keys``, ``/admin/webhooks``).

Every endpoint requires the admin key (:func:`flaregate.security.admin.require_admin`) and, by
default, a signed request (``SIGNED_ROUTES``, checked before routing). A created key is
returned in plain exactly once; the store keeps its SHA-256 digest, id and visible prefix.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from ..errors import GatewayError, bad_request, not_found
from ..http import Request, Response, json_response
from ..ports import Clock, SecurityStoreClient
from ..routes import Handler, Route, RouteTable, unknown_url
from ..schemas import validation_error
from . import limits
from .access import AccessControl, KeyPolicy, new_key
from .admin import require_admin
from .admin_scopes import Caller, identify, new_credential
from .auth_throttle import throttle_for
from .privacy import client_address
from .store import AUDIT_LIST_LIMIT
from .teams import Team, TeamPolicy, widening_field
from .webhooks import EVENT_TYPES, TargetRefused, WebhookDispatcher, check_target, new_secret

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("flaregate.admin")

_ID = re.compile(r"[A-Za-z0-9_]{1,64}")  # a key or webhook id: narrower than a route parameter
# path, handler name (``_<method>_<name>``), methods, summary
_PATHS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("/admin/keys", "keys", ("GET", "POST"), "List the stored gateway keys; create one (shown once)"),
    ("/admin/keys/{key_id}", "key", ("DELETE", "GET", "PATCH"),
     "Show, change (move to another team, say) or revoke a stored gateway key"),
    ("/admin/keys/{key_id}/rotate", "rotate", ("POST",),
     "A new secret for a stored key (shown once); the old one stays valid for grace_seconds"),
    ("/admin/teams", "teams", ("GET", "POST"), "List the teams; create one"),
    ("/admin/teams/{team_id}", "team", ("DELETE", "GET", "PATCH"), "Show, change or delete a team"),
    ("/admin/credentials", "credentials", ("GET", "POST"),
     "List the scoped admin credentials; make one (team_admin or read_only, shown once)"),
    ("/admin/credentials/{credential_id}", "credential", ("DELETE",), "Revoke a scoped admin credential"),
    ("/admin/audit", "audit", ("GET",), "The audit log of admin changes (newest first; ?limit=, ?credential=)"),
    ("/admin/webhooks", "webhooks", ("GET", "POST"), "List the webhooks; register one"),
    ("/admin/webhooks/{hook_id}", "webhook", ("DELETE",), "Delete a webhook"),
    ("/admin/webhooks/{hook_id}/deliveries", "deliveries", ("GET",), "A webhook's recent deliveries"),
    ("/admin/webhooks/{hook_id}/test", "test", ("POST",), "Send a webhook a test event"),
)


class CreateKey(KeyPolicy):
    name: StrictStr = Field(default="", max_length=100)
    expires_at: float | None = Field(default=None, gt=0)
    expires_in_seconds: int | None = Field(default=None, gt=0, le=10 * 365 * 86_400)


DEFAULT_ROTATION_GRACE_SECONDS = 3600
MAX_ROTATION_GRACE_SECONDS = 30 * 86400


class RotateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # How long the old secret keeps working (0: refused at once), so clients can move over.
    grace_seconds: int = Field(default=DEFAULT_ROTATION_GRACE_SECONDS, ge=0, le=MAX_ROTATION_GRACE_SECONDS)


class CreateCredential(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["team_admin", "read_only"]
    team_id: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,64}$")
    name: StrictStr = Field(default="", max_length=100)


class CreateTeam(TeamPolicy):
    id: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,64}$")
    name: StrictStr = Field(default="", max_length=100)


class ChangeTeam(TeamPolicy):
    name: StrictStr | None = Field(default=None, max_length=100)


class CreateWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: StrictStr = Field(min_length=1, max_length=2048)
    events: list[StrictStr] = Field(default_factory=lambda: ["*"], min_length=1, max_length=len(EVENT_TYPES) + 1)
    secret: StrictStr | None = Field(default=None, min_length=16, max_length=256)


class AdminApi:
    def __init__(self, settings: Settings, store: SecurityStoreClient | None, access: AccessControl,
                 webhooks: WebhookDispatcher, clock: Clock) -> None:
        self._settings = settings
        self._store = store
        self._access = access
        # The gateway's failed-authentication throttle (made by its security gate) for its
        # gateway keys too: this is the one security object given both the settings and them.
        access.throttle = throttle_for(settings, clock)
        self._webhooks = webhooks
        self._clock = clock
        self._table: RouteTable | None = None  # for route(), until the gateway has its table

    def routes(self) -> list[Route]:
        return [Route(path, {method: self._admin(getattr(self, f"_{method.lower()}_{name}"))
                             for method in methods}, "admin", summary)
                for path, name, methods, summary in _PATHS]

    def route(self, request: Request) -> Handler | None:
        """The handler for an admin path (one that answers 405 for a wrong method), or None.
        Superseded by :meth:`routes` once the gateway dispatches through its route table."""
        if self._table is None:
            self._table = RouteTable(self.routes())
        try:
            _, target, params = self._table.match(request.method, request.path)
        except GatewayError as exc:
            if exc.status == 404:
                return None
            refusal = exc

            async def wrong_method(request: Request, out: dict[str, str]) -> Response:
                raise refusal
            return wrong_method

        async def handler(request: Request, out: dict[str, str]) -> Response:
            return await target(replace(request, params=params), out)
        return handler

    def _admin(self, target: Callable[..., Awaitable[Response]]) -> Handler:
        """A handler that checks the id parameters, the admin key and the store, logs the
        call, then runs ``target(request, *params)``."""
        async def handler(request: Request, out: dict[str, str]) -> Response:
            ids = tuple(request.params.values())
            if not all(_ID.fullmatch(value) for value in ids):
                raise unknown_url(request.path)  # as if no route matched: nothing to authenticate
            if self._store is None:
                require_admin(request, self._settings)
                raise GatewayError(501, "This host has no security store; the admin API is unavailable.",
                                   type="api_error", code="admin_unavailable")
            caller = await identify(request, self._settings, self._store)
            if request.method != "GET":
                caller.require_write()
            log.info("admin %s %s from %s", request.method, request.path,
                     client_address(request.client_ip, self._settings.security.anonymize_ips))
            return await target(request, caller, *ids)
        return handler

    def _json(self, request: Request) -> dict[str, Any]:
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise GatewayError(415, "Content-Type must be application/json.", code="unsupported_media_type")
        body = limits.parse_json(request.body, self._settings.security.max_json_depth)
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.", code="invalid_json")
        return body

    async def _call(self, op: str, **args: Any) -> Any:
        assert self._store is not None
        return await self._store.call(op, args)

    # -- keys ----------------------------------------------------------------------------
    async def _post_keys(self, request: Request, caller: Caller) -> Response:
        try:
            spec = CreateKey.model_validate(self._json(request))
        except ValidationError as exc:
            raise validation_error(exc) from None
        expires_at = spec.expires_at
        if spec.expires_in_seconds is not None:
            expires_at = self._clock.now() + spec.expires_in_seconds
        plain, key_id, digest, prefix = new_key()
        policy = KeyPolicy.model_validate(spec.model_dump(include=set(KeyPolicy.model_fields)))
        if caller.role == "team_admin" and policy.team_id is None:
            policy = policy.model_copy(update={"team_id": caller.team_id})  # a team admin's keys are its team's
        caller.require_team(policy.team_id)
        await self._check_team_of(policy)
        record = await self._call("keys.create", id=key_id, digest=digest, prefix=prefix, name=spec.name,
                                  policy=policy.model_dump(), expires_at=expires_at)
        self._access.forget()
        log.info("admin created gateway key %s", key_id)
        return json_response({**record, "key": plain}, 201)

    async def _get_keys(self, request: Request, caller: Caller) -> Response:
        keys = [k for k in await self._call("keys.list") if caller.sees_team(k["policy"].get("team_id"))]
        return json_response({"object": "list", "data": keys})

    async def _key_of(self, caller: Caller, key_id: str) -> dict[str, Any]:
        """A stored key the caller may manage (a team admin: its team's), or the 404/403."""
        record = next((r for r in await self._call("keys.list") if r["id"] == key_id), None)
        if record is None:
            raise not_found(f"No gateway key with id {key_id}.", code="key_not_found")
        caller.require_team(record["policy"].get("team_id"))
        return dict(record)

    async def _get_key(self, request: Request, caller: Caller, key_id: str) -> Response:
        return json_response(await self._key_of(caller, key_id))

    async def _patch_key(self, request: Request, caller: Caller, key_id: str) -> Response:
        """Change a key's policy: the fields sent replace the key's (``team_id: null`` takes it
        out of its team). Spend already counted stays where it was counted: with the team it
        was spent in, and under the key's own budget."""
        body = self._json(request)
        unknown = sorted(set(body) - set(KeyPolicy.model_fields))
        if unknown:
            raise bad_request(f"Unknown parameter '{unknown[0][:64]}': a key's policy fields only.",
                              param=unknown[0][:64], code="unknown_parameter")
        old = await self._key_of(caller, key_id)
        try:
            policy = KeyPolicy.model_validate({**old["policy"], **body})
        except ValidationError as exc:
            raise validation_error(exc) from None
        caller.require_team(policy.team_id)  # a team admin cannot move a key out of its team
        await self._check_team_of(policy)
        record = await self._call("keys.update", id=key_id, policy=policy.model_dump())
        if record is None:
            raise not_found(f"No gateway key with id {key_id}.", code="key_not_found")
        self._access.forget()
        log.info("admin changed gateway key %s", key_id)
        return json_response(record)

    async def _post_rotate(self, request: Request, caller: Caller, key_id: str) -> Response:
        """A new secret for the key (its id, policy, team, limits and spend stay); the old
        secret authenticates until ``grace_seconds`` from now, then never again."""
        try:
            spec = RotateKey.model_validate(self._json(request) if request.body else {})
        except ValidationError as exc:
            raise validation_error(exc) from None
        await self._key_of(caller, key_id)
        plain, _, digest, prefix = new_key()
        valid_until = self._clock.now() + spec.grace_seconds
        record = await self._call("keys.rotate", id=key_id, digest=digest, prefix=prefix, valid_until=valid_until)
        if record is None:
            raise not_found(f"No usable gateway key with id {key_id} (revoked keys are not rotated).",
                            code="key_not_found")
        self._access.forget()
        log.info("admin rotated gateway key %s (grace %ss)", key_id, spec.grace_seconds)
        return json_response({**record, "key": plain, "previous_key_valid_until": valid_until})

    async def _check_team_of(self, policy: KeyPolicy) -> None:
        """A 400 unless the key's team exists and the key stays within it."""
        if policy.team_id is None:
            return
        record = await self._call("teams.get", id=policy.team_id)
        if record is None:
            raise bad_request(f"Unknown team '{policy.team_id}'.", param="team_id", code="team_not_found")
        widened = widening_field(Team.model_validate(record), policy)
        if widened is not None:
            field, reason = widened
            raise bad_request(f"The key would widen its team: {reason}.", param=field, code="widens_team")

    async def _delete_key(self, request: Request, caller: Caller, key_id: str) -> Response:
        await self._key_of(caller, key_id)
        record = await self._call("keys.revoke", id=key_id)
        if record is None:
            raise not_found(f"No gateway key with id {key_id}.", code="key_not_found")
        self._access.forget()
        log.info("admin revoked gateway key %s", key_id)
        return json_response({**record, "revoked": True})

    # -- teams ---------------------------------------------------------------------------
    def _check_team_policy(self, team: TeamPolicy) -> None:
        name = team.rate_limit_policy
        if name is not None and name not in {p.name for p in self._settings.rate_limits} | {"default"}:
            raise bad_request(f"Unknown rate-limit policy '{name[:64]}' (FLAREGATE_RATE_LIMITS names them).",
                              param="rate_limit_policy", code="invalid_value")

    async def _post_teams(self, request: Request, caller: Caller) -> Response:
        caller.require_admin()
        try:
            spec = CreateTeam.model_validate(self._json(request))
        except ValidationError as exc:
            raise validation_error(exc) from None
        self._check_team_policy(spec)
        team_id = spec.id or "team_" + secrets.token_hex(8)
        policy = TeamPolicy.model_validate(spec.model_dump(include=set(TeamPolicy.model_fields))).model_dump()
        record = await self._call("teams.create", id=team_id, name=spec.name, policy=policy)
        if record is None:
            raise GatewayError(409, f"A team with id {team_id} exists.", code="team_exists", param="id")
        log.info("admin created team %s", team_id)
        return json_response(record, 201)

    async def _get_teams(self, request: Request, caller: Caller) -> Response:
        teams = [t for t in await self._call("teams.list") if caller.sees_team(t["id"])]
        return json_response({"object": "list", "data": teams})

    async def _get_team(self, request: Request, caller: Caller, team_id: str) -> Response:
        caller.require_team(team_id)
        record = await self._call("teams.get", id=team_id)
        if record is None:
            raise not_found(f"No team with id {team_id}.", code="team_not_found")
        keys = [k["id"] for k in await self._call("keys.list")
                if k["policy"].get("team_id") == team_id and k["revoked_at"] is None]
        return json_response({**record, "keys": keys})

    async def _patch_team(self, request: Request, caller: Caller, team_id: str) -> Response:
        """Change a team: the fields sent replace the team's (``null`` lifts a restriction).
        A narrower team binds its keys at once (permission checks consult both)."""
        caller.require_admin()  # a team admin manages its keys, not its team's bounds
        try:
            change = ChangeTeam.model_validate(self._json(request))
        except ValidationError as exc:
            raise validation_error(exc) from None
        old = await self._call("teams.get", id=team_id)
        if old is None:
            raise not_found(f"No team with id {team_id}.", code="team_not_found")
        fields = set(TeamPolicy.model_fields)
        policy = TeamPolicy.model_validate({**{k: v for k, v in old.items() if k in fields},
                                            **change.model_dump(include=fields, exclude_unset=True)})
        self._check_team_policy(policy)
        name = change.name if change.name is not None else old["name"]
        record = await self._call("teams.update", id=team_id, name=name, policy=policy.model_dump())
        if record is None:
            raise not_found(f"No team with id {team_id}.", code="team_not_found")
        self._access.forget()
        log.info("admin changed team %s", team_id)
        return json_response(record)

    async def _delete_team(self, request: Request, caller: Caller, team_id: str) -> Response:
        caller.require_admin()
        members = [k["id"] for k in await self._call("keys.list")
                   if k["policy"].get("team_id") == team_id and k["revoked_at"] is None]
        if members:
            raise GatewayError(409, f"Team {team_id} still has {len(members)} active keys (e.g. {members[0]}):"
                               " move or revoke them first.", code="team_has_keys")
        if not await self._call("teams.delete", id=team_id):
            raise not_found(f"No team with id {team_id}.", code="team_not_found")
        self._access.forget()
        log.info("admin deleted team %s", team_id)
        return json_response({"id": team_id, "deleted": True})

    # -- scoped admin credentials and the audit log --------------------------------------
    async def _post_credentials(self, request: Request, caller: Caller) -> Response:
        caller.require_admin()
        try:
            spec = CreateCredential.model_validate(self._json(request))
        except ValidationError as exc:
            raise validation_error(exc) from None
        if (spec.role == "team_admin") != (spec.team_id is not None):
            raise bad_request("A team_admin credential names its team_id; a read_only one names none.",
                              param="team_id", code="invalid_value")
        if spec.team_id is not None and await self._call("teams.get", id=spec.team_id) is None:
            raise bad_request(f"Unknown team '{spec.team_id}'.", param="team_id", code="team_not_found")
        plain, cred_id, digest = new_credential()
        record = await self._call("credentials.create", id=cred_id, digest=digest, name=spec.name, role=spec.role,
                                  team_id=spec.team_id)
        log.info("admin made %s credential %s", spec.role, cred_id)
        return json_response({**record, "credential": plain}, 201)

    async def _get_credentials(self, request: Request, caller: Caller) -> Response:
        caller.require_admin()
        return json_response({"object": "list", "data": await self._call("credentials.list")})

    async def _delete_credential(self, request: Request, caller: Caller, credential_id: str) -> Response:
        caller.require_admin()
        record = await self._call("credentials.revoke", id=credential_id)
        if record is None:
            raise not_found(f"No credential with id {credential_id}.", code="credential_not_found")
        return json_response({**record, "revoked": True})

    async def _get_audit(self, request: Request, caller: Caller) -> Response:
        caller.require_team(None)  # the full admin and read-only credentials
        limit = request.query.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= AUDIT_LIST_LIMIT:
            raise bad_request(f"limit must be 1-{AUDIT_LIST_LIMIT}.", param="limit", code="invalid_value")
        credential = request.query.get("credential") or None
        if credential is not None and not _ID.fullmatch(credential):
            raise bad_request("credential must be 'admin' or a credential id.", param="credential",
                              code="invalid_value")
        rows = await self._call("audit.list", limit=int(limit), credential=credential)
        return json_response({"object": "list", "data": rows})

    # -- webhooks ------------------------------------------------------------------------
    async def _post_webhooks(self, request: Request, caller: Caller) -> Response:
        caller.require_admin()
        try:
            spec = CreateWebhook.model_validate(self._json(request))
        except ValidationError as exc:
            raise validation_error(exc) from None
        unknown = [e for e in spec.events if e != "*" and e not in EVENT_TYPES]
        if unknown:
            raise bad_request(f"Unknown event type {unknown[0][:64]!r}; known: {', '.join(EVENT_TYPES)} or '*'.",
                              param="events", code="invalid_value")
        try:
            url = check_target(spec.url, self._settings.security.webhook_allow_private_targets)
        except TargetRefused as exc:
            raise bad_request(f"Webhook target refused: {exc}.", param="url", code="webhook_target_refused") from None
        secret = spec.secret or new_secret()
        hook_id = "wh_" + secrets.token_hex(8)
        record = await self._call("webhooks.create", id=hook_id, url=url, events=sorted(set(spec.events)),
                                  secret=secret)
        log.info("admin registered webhook %s", hook_id)
        return json_response({**record, "secret": secret}, 201)

    async def _get_webhooks(self, request: Request, caller: Caller) -> Response:
        caller.require_team(None)  # not a team's: the full admin and read-only credentials
        return json_response({"object": "list", "data": await self._call("webhooks.list")})

    async def _delete_webhook(self, request: Request, caller: Caller, hook_id: str) -> Response:
        caller.require_admin()
        if not await self._call("webhooks.delete", id=hook_id):
            raise not_found(f"No webhook with id {hook_id}.", code="webhook_not_found")
        return json_response({"id": hook_id, "deleted": True})

    async def _get_deliveries(self, request: Request, caller: Caller, hook_id: str) -> Response:
        caller.require_team(None)
        return json_response({"object": "list", "data": await self._call("deliveries.list", webhook_id=hook_id)})

    async def _post_test(self, request: Request, caller: Caller, hook_id: str) -> Response:
        caller.require_admin()
        if not any(h["id"] == hook_id for h in await self._call("webhooks.list")):
            raise not_found(f"No webhook with id {hook_id}.", code="webhook_not_found")
        self._webhooks.emit("webhook.test", {"webhook_id": hook_id}, webhook_id=hook_id)
        return json_response({"queued": True}, 202)
