"""The upstream port over httpx: one pooled async client, bodies streamed, not buffered."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import httpx

from ...ports import UpstreamError, UpstreamTimeout


class HttpxUpstreamResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = {k.lower(): v for k, v in response.headers.items()}

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"read timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{type(exc).__name__}") from None

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"read timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{type(exc).__name__}") from None

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxTransport:
    def __init__(self) -> None:
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=False,
            trust_env=False,
        )

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> HttpxUpstreamResponse:
        request = self._client.build_request(
            method, url, headers=dict(headers), content=body, timeout=httpx.Timeout(timeout)
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"no response within {timeout:g}s ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{type(exc).__name__}") from None
        return HttpxUpstreamResponse(response)

    async def aclose(self) -> None:
        await self._client.aclose()
