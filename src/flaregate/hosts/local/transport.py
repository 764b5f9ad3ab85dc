"""The upstream port over aiohttp: one pooled session, bodies streamed, not buffered.

Chosen by measurement (``bench/``): at 16 concurrent requests to a local upstream httpx
spent ~1.3 ms of CPU per request in its connection pool, aiohttp ~0.06 ms.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import aiohttp
from aiohttp.helpers import is_ip_address

from ...ports import (
    DEFAULT_MAX_RESPONSE_BYTES,
    UpstreamError,
    UpstreamLimits,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
    declared_too_large,
)
from ...security.webhooks import TargetRefused, refused_ip
from .public_dns import PublicOnlyResolver, refusal

# Idle pooled connections are dropped before the common 5 s server keep-alive expires,
# so a request is rarely written onto a connection the server is closing.
KEEPALIVE_SECONDS = 4.0


def _unread(content: aiohttp.StreamReader) -> bytes:
    """What aiohttp had received but not handed out when the connection broke: its reader
    raises first and keeps them. They may hold the stream's first events, which decide
    whether a stream had begun (then the client gets them and an error event) or may
    still fail over. Private API; where it is missing those bytes are lost, as before."""
    try:
        return content._read_nowait(-1) if getattr(content, "_buffer", None) else b""
    except Exception:
        return b""


class AiohttpUpstreamResponse:
    __slots__ = ("_response", "status", "headers", "_complete", "_max_body")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = {k.lower(): v for k, v in response.headers.items()}
        self._complete = False
        self._max_body = DEFAULT_MAX_RESPONSE_BYTES

    def limit(self, limits: UpstreamLimits) -> None:
        self._max_body = limits.max_response_bytes

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            async for chunk in content.iter_any():
                yield chunk
        except TimeoutError as exc:
            raise UpstreamTimeout(f"read timed out ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            rest = _unread(content)
            if rest:
                yield rest
            raise UpstreamError(type(exc).__name__) from None
        self._complete = True

    async def read(self) -> bytes:
        """The whole body, never more than the cap: a longer one is refused by its
        ``content-length`` before a byte is read, or as soon as it passes the cap (chunked,
        or inflating); its connection is dropped on close, not pooled."""
        limit = self._max_body
        if declared_too_large(self.headers, limit):
            raise UpstreamResponseTooLarge("a body", limit)
        try:
            if self.headers.get("content-length", "").isdigit() and "content-encoding" not in self.headers:
                body = await self._response.read()  # its length is known and within the cap
            else:
                parts, size = [], 0
                async for chunk in self._response.content.iter_any():
                    size += len(chunk)
                    if size > limit:
                        raise UpstreamResponseTooLarge("a body", limit)
                    parts.append(chunk)
                body = b"".join(parts)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"read timed out ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(type(exc).__name__) from None
        self._complete = True
        return body

    async def aclose(self) -> None:
        # A fully read response gives its connection back to the pool; anything else
        # (a client that went away mid-stream) closes it, as the rest is unread.
        if self._complete:
            self._response.release()
        else:
            self._response.close()


class AiohttpTransport:
    def __init__(self, max_connections: int = 200) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._public: aiohttp.ClientSession | None = None  # webhooks: public addresses only
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the running event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=KEEPALIVE_SECONDS)
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # never carry one tenant's cookies to another
                trust_env=False,
                raise_for_status=False,
            )
        return self._session

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        # Like the former httpx Timeout(t): connect (pool wait included) and each read.
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, connect=seconds, sock_read=seconds)
            if len(self._timeouts) < 64:
                self._timeouts[seconds] = timeout
        return timeout

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> AiohttpUpstreamResponse:
        return await self._send(self._client(), method, url, headers, body, timeout)

    async def send_public(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> AiohttpUpstreamResponse:
        """``send`` to a public address only (webhook deliveries): the host name is resolved
        for each connection and refused (TargetRefused) when any address it resolves to is
        not public; the connection goes to the addresses that were checked."""
        host = urlsplit(url).hostname or ""
        if is_ip_address(host) and refused_ip(host):  # literals never reach the resolver
            raise TargetRefused(f"host {host} is a private, loopback or reserved address")
        if self._public is None or self._public.closed:
            connector = aiohttp.TCPConnector(limit=16, resolver=PublicOnlyResolver(), use_dns_cache=False,
                                             keepalive_timeout=KEEPALIVE_SECONDS)
            self._public = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                                 trust_env=False, raise_for_status=False)
        return await self._send(self._public, method, url, headers, body, timeout)

    async def _send(
        self, session: aiohttp.ClientSession, method: str, url: str, headers: Mapping[str, str], body: bytes,
        timeout: float,
    ) -> AiohttpUpstreamResponse:
        try:
            response = await session.request(
                method, url, headers=headers, data=body or None, timeout=self._timeout(timeout),
                allow_redirects=False,
            )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"no response within {timeout:g}s ({type(exc).__name__})") from None
        except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a URL aiohttp cannot use
            refused = refusal(exc)  # only the public session's resolver refuses
            if refused is not None:
                raise TargetRefused(str(refused)) from None
            raise UpstreamError(type(exc).__name__) from None
        return AiohttpUpstreamResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._public is not None:
            await self._public.close()
            self._public = None
