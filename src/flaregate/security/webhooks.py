"""Webhooks: validated targets, and signed deliveries with retries in the background.

``WebhookDispatcher.emit(event_type, payload)`` never waits: it hands one job per event to
the background-task port (``ctx.waitUntil`` on the edge), which finds the subscribed
webhooks in the security store and POSTs to each through the upstream-transport port,
retrying with exponential backoff on connection errors, timeouts and non-2xx answers.
Every attempt is written to the delivery log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from ..config import SecuritySettings
from ..ports import BackgroundTasks, Clock, SecurityStoreClient, UpstreamError, UpstreamTransport
from .signing import WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, sign_webhook

log = logging.getLogger("flaregate.webhooks")

EVENT_TYPES = (
    "provider.down", "provider.up", "failover", "circuit.open", "circuit.close",
    "rate_limit.saturated", "budget.exceeded", "error_rate.high", "webhook.test",
)
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")
MAX_BACKOFF_SECONDS = 60.0


class TargetRefused(ValueError):
    """A webhook URL the gateway will not call; the message says why."""


def check_target(url: str, allow_private: bool) -> str:
    """Return the URL when it is an acceptable webhook target, else raise TargetRefused.

    Refused unless ``allow_private`` (a development setting): plain http, and hosts that
    are loopback, private, link-local or otherwise non-public addresses or local names.
    Names are not resolved here (the core has no DNS); on the edge, Workers cannot reach
    private networks anyway.
    """
    if len(url) > 2048:
        raise TargetRefused("url is longer than 2048 characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise TargetRefused("url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise TargetRefused("url must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise TargetRefused("url must not carry credentials")
    if allow_private:
        return url
    if parts.scheme != "https":
        raise TargetRefused("url must use https (plain http only with WEBHOOK_ALLOW_PRIVATE_TARGETS)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.lower().rstrip(".")
        if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES) or "." not in name:
            raise TargetRefused(f"host {host!r} is a local name") from None
        return url
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_global or address.is_multicast:
        raise TargetRefused(f"host {host} is a private, loopback or reserved address")
    return url


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class WebhookDispatcher:
    def __init__(self, settings: SecuritySettings, store: SecurityStoreClient | None,
                 transport: UpstreamTransport, tasks: BackgroundTasks, clock: Clock) -> None:
        self._settings = settings
        self._store = store
        self._transport = transport
        self._tasks = tasks
        self._clock = clock

    def emit(self, event_type: str, payload: dict[str, Any], webhook_id: str | None = None) -> None:
        """Queue an event for every webhook subscribed to it (or for the one webhook named);
        returns at once."""
        if self._store is None:
            return
        event = {"id": "evt_" + secrets.token_hex(12), "type": event_type,
                 "created": round(self._clock.now(), 3), "data": payload}
        self._tasks.run(self._fan_out(event, webhook_id))

    async def _fan_out(self, event: dict[str, Any], webhook_id: str | None) -> None:
        assert self._store is not None  # emit() queues nothing without a store
        try:
            hooks = await self._store.call("webhooks.for_event", {"event": event["type"], "webhook_id": webhook_id})
        except Exception:
            log.warning("could not load webhooks for %s", event["type"], exc_info=True)
            return
        await asyncio.gather(*(self.deliver(hook, event) for hook in hooks))

    async def deliver(self, hook: dict[str, Any], event: dict[str, Any]) -> bool:
        """POST one event to one webhook, with retries; True once a 2xx answer came back."""
        body = json.dumps(event, separators=(",", ":")).encode()
        attempts = self._settings.webhook_max_attempts
        for attempt in range(1, attempts + 1):
            status, error = await self._attempt(hook, event, body)
            delivered = status is not None and 200 <= status < 300
            await self._log(hook, event, attempt, status, error, delivered)
            if delivered:
                return True
            if attempt < attempts:
                delay = min(MAX_BACKOFF_SECONDS, self._settings.webhook_retry_base_seconds * 2 ** (attempt - 1))
                await asyncio.sleep(delay)
        log.warning("webhook %s: event %s not delivered after %d attempts", hook["id"], event["type"], attempts)
        return False

    async def _attempt(self, hook: dict[str, Any], event: dict[str, Any], body: bytes) -> tuple[int | None, str | None]:
        try:
            check_target(hook["url"], self._settings.webhook_allow_private_targets)
        except TargetRefused as exc:
            return None, f"refused: {exc}"
        ts = int(self._clock.now())
        headers = {"content-type": "application/json", "user-agent": "flaregate-webhooks/1",
                   "x-flaregate-event": event["type"], "x-flaregate-delivery": event["id"],
                   "x-flaregate-webhook-id": hook["id"], WEBHOOK_TIMESTAMP_HEADER: str(ts),
                   WEBHOOK_SIGNATURE_HEADER: sign_webhook(hook["secret"], body, ts)}
        try:
            response = await self._transport.send("POST", hook["url"], headers, body,
                                                  self._settings.webhook_timeout_seconds)
        except UpstreamError as exc:
            return None, type(exc).__name__ + (f": {exc}" if str(exc) else "")
        try:
            await response.read()
        except UpstreamError:
            pass
        finally:
            await response.aclose()
        return response.status, None

    async def _log(self, hook: dict[str, Any], event: dict[str, Any], attempt: int, status: int | None,
                   error: str | None, delivered: bool) -> None:
        assert self._store is not None
        try:
            await self._store.call("deliveries.log", {
                "webhook_id": hook["id"], "delivery_id": event["id"], "event": event["type"],
                "attempt": attempt, "status": status, "error": (error or None) and error[:300],
                "delivered": delivered})
        except Exception:
            log.warning("could not write the webhook delivery log", exc_info=True)
