"""Name resolution for webhook deliveries: a name is resolved when a connection is made
(``loop.getaddrinfo``, through aiohttp's threaded resolver) and refused when any address
it resolves to is private, loopback, link-local or otherwise not public
(:func:`flaregate.security.webhooks.refused_ip`, the rule registration applies to
literal addresses). The connector then connects to exactly the addresses checked here,
so a name cannot pass the check with one answer and be reached at another (DNS rebinding).
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ...security.webhooks import refused_ip


class PrivateAddressRefused(OSError):
    """A webhook's host name resolved to an address webhooks may not reach."""


class PublicOnlyResolver(AbstractResolver):
    def __init__(self, resolver: AbstractResolver | None = None) -> None:
        self._resolver = resolver

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if self._resolver is None:  # made on first use: it belongs to the running loop
            self._resolver = aiohttp.ThreadedResolver()
        answers = await self._resolver.resolve(host, port, family)
        refused = sorted({str(a["host"]) for a in answers if refused_ip(str(a["host"]))})
        if refused or not answers:
            raise PrivateAddressRefused(
                f"host {host.rstrip('.')!r} resolves to a private, loopback or reserved address "
                f"({', '.join(refused) or 'no address'})")
        return answers

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()


def refusal(exc: BaseException) -> PrivateAddressRefused | None:
    """The resolver's refusal inside an aiohttp connection error, if that is its cause."""
    seen: Any = exc
    while seen is not None:
        if isinstance(seen, PrivateAddressRefused):
            return seen
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return None
