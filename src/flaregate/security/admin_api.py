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
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from ..errors import GatewayError, bad_request, not_found
from ..http import Request, Response, json_response
from ..ports import Clock, SecurityStoreClient
from ..schemas import validation_error
from . import limits
from .access import AccessControl, KeyPolicy, new_key
from .admin import require_admin
from .privacy import client_address
from .webhooks import EVENT_TYPES, TargetRefused, WebhookDispatcher, check_target, new_secret

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("flaregate.admin")

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]
_ID = r"[A-Za-z0-9_]{1,64}"
_PATHS: tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...] = (
    (re.compile(r"^/admin/keys$"), "keys", ("GET", "POST")),
    (re.compile(rf"^/admin/keys/({_ID})$"), "key", ("DELETE", "GET")),
    (re.compile(r"^/admin/webhooks$"), "webhooks", ("GET", "POST")),
    (re.compile(rf"^/admin/webhooks/({_ID})$"), "webhook", ("DELETE",)),
    (re.compile(rf"^/admin/webhooks/({_ID})/deliveries$"), "deliveries", ("GET",)),
    (re.compile(rf"^/admin/webhooks/({_ID})/test$"), "test", ("POST",)),
)


class CreateKey(KeyPolicy):
    name: StrictStr = Field(default="", max_length=100)
    expires_at: float | None = Field(default=None, gt=0)
    expires_in_seconds: int | None = Field(default=None, gt=0, le=10 * 365 * 86_400)


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
        self._webhooks = webhooks
        self._clock = clock

    def route(self, request: Request) -> Handler | None:
        """The handler for an admin path (one that answers 405 for a wrong method), or None."""
        for pattern, name, methods in _PATHS:
            match = pattern.match(request.path)
            if match is None:
                continue
            if request.method not in methods:
                def wrong_method(request: Request, out: dict[str, str], methods=methods) -> Awaitable[Response]:
                    raise GatewayError(405, f"Method {request.method[:16]} is not allowed on this admin path.",
                                       code="method_not_allowed", headers={"allow": ", ".join(methods)})
                return wrong_method
            target = getattr(self, f"_{request.method.lower()}_{name}")

            async def handler(request: Request, out: dict[str, str], target=target, match=match) -> Response:
                require_admin(request, self._settings)
                if self._store is None:
                    raise GatewayError(501, "This host has no security store; the admin API is unavailable.",
                                       type="api_error", code="admin_unavailable")
                log.info("admin %s %s from %s", request.method, request.path,
                         client_address(request.client_ip, self._settings.security.anonymize_ips))
                return await target(request, *match.groups())

            return handler
        return None

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
    async def _post_keys(self, request: Request) -> Response:
        try:
            spec = CreateKey.model_validate(self._json(request))
        except ValidationError as exc:
            raise validation_error(exc) from None
        expires_at = spec.expires_at
        if spec.expires_in_seconds is not None:
            expires_at = self._clock.now() + spec.expires_in_seconds
        plain, key_id, digest, prefix = new_key()
        policy = KeyPolicy.model_validate(spec.model_dump(include=set(KeyPolicy.model_fields))).model_dump()
        record = await self._call("keys.create", id=key_id, digest=digest, prefix=prefix, name=spec.name,
                                  policy=policy, expires_at=expires_at)
        self._access.forget()
        log.info("admin created gateway key %s", key_id)
        return json_response({**record, "key": plain}, 201)

    async def _get_keys(self, request: Request) -> Response:
        return json_response({"object": "list", "data": await self._call("keys.list")})

    async def _get_key(self, request: Request, key_id: str) -> Response:
        for record in await self._call("keys.list"):
            if record["id"] == key_id:
                return json_response(record)
        raise not_found(f"No gateway key with id {key_id}.", code="key_not_found")

    async def _delete_key(self, request: Request, key_id: str) -> Response:
        record = await self._call("keys.revoke", id=key_id)
        if record is None:
            raise not_found(f"No gateway key with id {key_id}.", code="key_not_found")
        self._access.forget()
        log.info("admin revoked gateway key %s", key_id)
        return json_response({**record, "revoked": True})

    # -- webhooks ------------------------------------------------------------------------
    async def _post_webhooks(self, request: Request) -> Response:
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

    async def _get_webhooks(self, request: Request) -> Response:
        return json_response({"object": "list", "data": await self._call("webhooks.list")})

    async def _delete_webhook(self, request: Request, hook_id: str) -> Response:
        if not await self._call("webhooks.delete", id=hook_id):
            raise not_found(f"No webhook with id {hook_id}.", code="webhook_not_found")
        return json_response({"id": hook_id, "deleted": True})

    async def _get_deliveries(self, request: Request, hook_id: str) -> Response:
        return json_response({"object": "list", "data": await self._call("deliveries.list", webhook_id=hook_id)})

    async def _post_test(self, request: Request, hook_id: str) -> Response:
        if not any(h["id"] == hook_id for h in await self._call("webhooks.list")):
            raise not_found(f"No webhook with id {hook_id}.", code="webhook_not_found")
        self._webhooks.emit("webhook.test", {"webhook_id": hook_id}, webhook_id=hook_id)
        return json_response({"queued": True}, 202)
