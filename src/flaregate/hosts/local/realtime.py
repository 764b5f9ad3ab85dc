"""``/v1/realtime`` on the standalone server: the client's ASGI WebSocket and the provider's
aiohttp one, with the core's relay (``realtime/relay.py``) between them.

The provider's socket is opened before the client's upgrade is accepted; when no provider
accepts, the client's upgrade is accepted all the same and gets an ``error`` event and a
close 1011 (what the SDK understands of a session that cannot go on), never silence. Each socket has a writer task draining a queue: the relay's ``send``
never blocks, and frames keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from ...errors import GatewayError
from ...gateway import Gateway
from ...http import Request
from ...realtime.api import Endpoint, Session, no_provider
from ...realtime.relay import Relay

log = logging.getLogger("flaregate.local.realtime")

_CLOSE = object()  # a writer's sentinel: the close that ends its queue


class _Writer:
    """A socket's outgoing side as the relay sees it: ``send``/``close`` queue; one task writes."""

    def __init__(self, write: Callable[[Any], Awaitable[None]], shut: Callable[[int, str], Awaitable[None]]) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._write = write
        self._shut = shut
        self.task = asyncio.ensure_future(self._run())

    def send(self, data: Any) -> None:
        self._queue.put_nowait(data)

    def close(self, code: int, reason: str) -> None:
        self._queue.put_nowait((_CLOSE, code, reason))

    async def _run(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, tuple) and item and item[0] is _CLOSE:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._shut(item[1], item[2]), 1.0)
                    return
                await self._write(item)
        except Exception:  # the peer is gone: the reader reports it, nothing more to write
            log.debug("a realtime socket stopped taking frames", exc_info=True)


async def _read_client(receive: Any, relay: Relay) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            relay.client_closed(message.get("code"))
            return
        text = message.get("text")
        relay.from_client(text if text is not None else message.get("bytes") or b"")


async def _read_upstream(ws: aiohttp.ClientWebSocketResponse, relay: Relay) -> None:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            relay.from_upstream(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            relay.from_upstream(message.data)
        else:  # CLOSE / CLOSING / CLOSED / ERROR
            break
    relay.upstream_closed(ws.close_code if ws.close_code is not None else 1006)


class LocalRealtime:
    """One aiohttp session for every provider socket of this process."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._http: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def _connect(self, session: Session) -> tuple[aiohttp.ClientWebSocketResponse, Endpoint]:
        """The first of the session's endpoints that accepts, each failure counted against its
        target; none: the GatewayError to answer."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        timeout = self._gateway.settings.upstream_timeout_seconds
        reasons: list[str] = []
        for endpoint in session.endpoints:
            try:
                ws = await asyncio.wait_for(self._http.ws_connect(
                    endpoint.url, headers=endpoint.headers, max_msg_size=0, autoping=True, compress=0,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0)), timeout)
                return ws, endpoint
            except aiohttp.WSServerHandshakeError as exc:
                reasons.append(f"'{endpoint.provider}' answered HTTP {exc.status}")
                session.failed(endpoint, f"refused the Realtime upgrade with HTTP {exc.status}")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reasons.append(f"'{endpoint.provider}' could not be reached")
                session.failed(endpoint, f"could not be reached: {type(exc).__name__}")
        raise no_provider(reasons)

    async def serve(self, request: Request, receive: Any, send: Any,
                    reject: Callable[[GatewayError], Awaitable[None]]) -> None:
        try:
            session = await self._gateway.realtime.open(request)
        except GatewayError as exc:
            await reject(exc)
            return
        refusal: GatewayError | None = None
        try:
            ws, endpoint = await self._connect(session)
        except GatewayError as exc:
            refusal = exc
        except asyncio.CancelledError:
            session.abandon()
            raise
        relay = session.relay
        if (await receive())["type"] != "websocket.connect":
            if refusal is None:
                await ws.close()
            session.abandon()
            return
        await send({"type": "websocket.accept", "subprotocol": session.subprotocol})

        async def to_client(data: Any) -> None:
            await send({"type": "websocket.send", "text": data} if isinstance(data, str)
                       else {"type": "websocket.send", "bytes": bytes(data)})

        async def close_client(code: int, reason: str) -> None:
            await send({"type": "websocket.close", "code": code, "reason": reason[:120]})

        if refusal is not None:  # no provider accepted: an error event and a close
            client_only = _Writer(to_client, close_client)
            session.refuse(client_only, refusal)
            await asyncio.wait([client_only.task], timeout=2.0)
            await relay.done.wait()
            return

        async def to_upstream(data: Any) -> None:
            if isinstance(data, str):
                await ws.send_str(data)
            else:
                await ws.send_bytes(bytes(data))

        async def close_upstream(code: int, reason: str) -> None:
            await ws.close(code=code, message=reason[:120].encode())

        client, upstream = _Writer(to_client, close_client), _Writer(to_upstream, close_upstream)
        session.start(endpoint, client, upstream)
        readers = [asyncio.ensure_future(_read_client(receive, relay)),
                   asyncio.ensure_future(_read_upstream(ws, relay))]
        try:
            await relay.done.wait()
            # Both writers flush what the end queued (the error event, the closes).
            await asyncio.wait([client.task, upstream.task], timeout=2.0)
        finally:
            if not relay.ended:  # this task was cancelled (the server stopping)
                relay.end("server_stopping", 1001, "server stopping")
            for task in (*readers, client.task, upstream.task):
                task.cancel()
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 1.0)
