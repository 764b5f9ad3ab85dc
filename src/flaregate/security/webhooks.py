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
import re
import secrets
from typing import Any
from urllib.parse import unquote, urlsplit

from ..ports import BackgroundTasks, Clock, SecurityStoreClient, UpstreamError, UpstreamTransport
from .settings import SecuritySettings
from .signing import WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, sign_webhook

log = logging.getLogger("flaregate.webhooks")

EVENT_TYPES = (
    "provider.down", "provider.up", "failover", "circuit.open", "circuit.close",
    "rate_limit.saturated", "budget.exceeded", "budget.threshold", "error_rate.high", "webhook.test",
    "mcp.tool_changed",  # an MCP tool's definition is not the approved one (mcp_gateway/pinning.py)
)
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")
MAX_BACKOFF_SECONDS = 60.0


class TargetRefused(ValueError):
    """A webhook URL the gateway will not call; the message says why."""


_NAME = re.compile(r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$")
_HEX, _OCTAL, _DECIMAL = frozenset("0123456789abcdef"), frozenset("01234567"), frozenset("0123456789")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ipv4_number(part: str) -> int | None:
    """One part of an IPv4 host as URL parsers and ``inet_aton`` read it: ``0x`` hex, a
    leading ``0`` octal, else decimal; None when it is not a number."""
    digits, base = part, 10
    if part[:2] == "0x":
        digits, base = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    if not digits:
        return 0 if base == 16 else None
    allowed = _HEX if base == 16 else _OCTAL if base == 8 else _DECIMAL
    return int(digits, base) if set(digits) <= allowed else None


def ipv4_shorthand(host: str) -> ipaddress.IPv4Address | None:
    """The address a numeric host means (``127.1``, ``2130706433``, ``0x7f.1``,
    ``0177.0.0.1``), as the WHATWG URL parser and ``inet_aton`` read it; None for a name.
    A host that ends in a number but is no address raises TargetRefused (browsers and
    Workers' fetch refuse it too)."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not parts[-1] or not (set(parts[-1]) <= _DECIMAL or _ipv4_number(parts[-1]) is not None):
        return None  # the last label is not a number: a name
    numbers = [_ipv4_number(p) for p in parts] if len(parts) <= 4 else [None]
    if any(n is None for n in numbers):
        raise TargetRefused(f"host {host!r} is neither a name nor an IPv4 address")
    *high, last = (n for n in numbers if n is not None)
    if any(n > 255 for n in high) or last >= 256 ** (4 - len(high)):
        raise TargetRefused(f"host {host!r} is out of the IPv4 range")
    return ipaddress.IPv4Address(sum(n << (8 * (3 - i)) for i, n in enumerate(high)) + last)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 one leads to: mapped, NAT64, 6to4, Teredo, IPv4-compatible."""
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64 or int(address) >> 32 == 0:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def refused_address(address: Address) -> bool:
    """True for any address a webhook may not reach: private, loopback, link-local,
    multicast, reserved, unspecified or otherwise not globally routable (and an IPv6
    address that embeds such an IPv4 one)."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(refused_address(v4) for v4 in _embedded_ipv4(address)):
            return True
        if address.is_site_local:
            return True
    return (not address.is_global or address.is_private or address.is_loopback or address.is_link_local
            or address.is_multicast or address.is_reserved or address.is_unspecified)


def refused_ip(text: str) -> bool:
    """:func:`refused_address` for a resolver's answer (an IPv6 one may carry a zone);
    anything that does not parse is refused."""
    try:
        return refused_address(ipaddress.ip_address(text))
    except ValueError:
        return True


def _host_address(host: str) -> tuple[Address | None, str]:
    """The address a URL's host names, normalised as URL parsers do (percent-decoded, IDNA
    mapped, numeric shorthand read), or None and the normalised host name. Raises
    TargetRefused for a host that is neither."""
    host = unquote(host)  # the WHATWG parser percent-decodes a host before reading it
    if ":" in host:  # urlsplit took the brackets off: only an IPv6 address has colons
        try:
            return ipaddress.IPv6Address(host), host
        except ValueError:
            raise TargetRefused(f"host {host!r} is not a valid IPv6 address") from None
    if not host.isascii():  # e.g. full-width digits and dots map onto ASCII ones
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise TargetRefused(f"host {host!r} is not a valid host name") from None
    host = host.lower()
    address = ipv4_shorthand(host)
    if address is None and not _NAME.match(host.removesuffix(".")):
        raise TargetRefused(f"host {host!r} is not a valid host name")
    return address, host


def check_target(url: str, allow_private: bool) -> str:
    """Return the URL when it is an acceptable webhook target, else raise TargetRefused.

    Refused unless ``allow_private`` (a development setting): plain http, and hosts that
    are local names or, read the way URL parsers and ``inet_aton`` read them (``127.1``,
    ``2130706433``, ``0x7f.1``, ``[::ffff:127.0.0.1]``), loopback, private, link-local,
    multicast, reserved or unspecified addresses. Names are not resolved here (the core
    has no DNS): the local host resolves them at delivery and refuses a private answer
    (``send_public`` of its transport); Workers have no DNS API (docs/security.md).
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
    address, name = _host_address(host)
    if address is None:
        name = name.rstrip(".")
        if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES) or "." not in name:
            raise TargetRefused(f"host {host!r} is a local name")
        return url
    if refused_address(address):
        raise TargetRefused(f"host {host} is a private, loopback or reserved address ({address})")
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
        # A host that resolves names (the local one) offers ``send_public``: each name is
        # resolved at delivery and refused when it leads to a private address (TargetRefused).
        # Workers have no DNS API: there, ``send`` (docs/security.md, "Webhooks").
        send = self._transport.send
        if not self._settings.webhook_allow_private_targets:
            send = getattr(self._transport, "send_public", send)
        try:
            response = await send("POST", hook["url"], headers, body, self._settings.webhook_timeout_seconds)
        except TargetRefused as exc:
            return None, f"refused: {exc}"
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
