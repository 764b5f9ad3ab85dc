"""``/v1/realtime`` in the Worker: the session lives in the Worker invocation that accepted it
(docs/realtime.md says why not in a Durable Object).

The provider's socket is opened first, with ``fetch(url, {headers: {Upgrade: websocket}})``
and ``response.webSocket.accept()``; only then is the client's ``WebSocketPair`` made and
the 101 returned. When no provider accepts, the client's socket is given an ``error`` event
and a close before the 101 goes out. The relay is driven by the two sockets'
JS event listeners (``create_proxy``): each frame is one call into Python, which forwards it
with the socket's synchronous ``send`` unless the relay must read it. The proxies are
destroyed when the session ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import Any

import js
import workers
from pyodide.ffi import create_proxy, to_js

from ...errors import GatewayError
from ...gateway import Gateway
from ...http import Request
from ...realtime.api import Endpoint, Session, no_provider
from ...realtime.relay import Relay

log = logging.getLogger("flaregate.edge.realtime")


class _JsSocket:
    """A JS WebSocket as the relay sees it: ``send`` and ``close`` never raise."""

    __slots__ = ("_ws",)

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    def send(self, data: Any) -> None:
        try:
            self._ws.send(data if isinstance(data, str) else to_js(bytes(data)))
        except Exception:  # the socket is gone; its close event tells the relay
            log.debug("a realtime socket refused a frame", exc_info=True)

    def close(self, code: int, reason: str) -> None:
        try:
            self._ws.close(code, reason[:120])
        except Exception:
            log.debug("closing a realtime socket failed (already closed?)", exc_info=True)


def _frame(data: Any) -> Any:
    return data if isinstance(data, str) else bytes(data.to_bytes())


def _in(context: contextvars.Context, handler: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(event: Any) -> None:
        context.run(handler, event)

    return run


def _listen(relay: Relay, client: Any, upstream: Any) -> list[tuple[Any, str, Any]]:
    """The two sockets' listeners, each a proxy the caller destroys at the session's end."""

    def client_message(event: Any) -> None:
        relay.from_client(_frame(event.data))

    def client_close(event: Any) -> None:
        relay.client_closed(getattr(event, "code", None))

    def upstream_message(event: Any) -> None:
        relay.from_upstream(_frame(event.data))

    def upstream_close(event: Any) -> None:
        relay.upstream_closed(getattr(event, "code", 1006))

    def upstream_error_(event: Any) -> None:
        relay.upstream_closed(1006)

    # Each listener runs in this request's context (its scope: the ports reach the env and
    # the Durable Objects through it), which a JS callback does not bring by itself.
    context = contextvars.copy_context()
    proxies = []
    for ws, kind, handler in ((client, "message", client_message), (client, "close", client_close),
                              (client, "error", client_close), (upstream, "message", upstream_message),
                              (upstream, "close", upstream_close), (upstream, "error", upstream_error_)):
        proxy = create_proxy(_in(context, handler))
        ws.addEventListener(kind, proxy)
        proxies.append((ws, kind, proxy))
    return proxies


async def _release(relay: Relay, proxies: list[tuple[Any, str, Any]]) -> None:
    await relay.done.wait()
    for ws, kind, proxy in proxies:
        try:
            ws.removeEventListener(kind, proxy)  # a close event still on its way finds no handler
            proxy.destroy()
        except Exception:
            log.debug("a realtime listener was already released", exc_info=True)


async def _connect(session: Session) -> tuple[Any, Endpoint]:
    """The first of the session's endpoints that accepts (``fetch`` with ``Upgrade:
    websocket``), each failure counted against its target; none: the GatewayError to answer."""
    reasons: list[str] = []
    for endpoint in session.endpoints:
        url = "http" + endpoint.url[2:]  # fetch speaks http(s); the Upgrade header asks for a socket
        headers = js.Headers.new(to_js([*endpoint.headers.items(), ("upgrade", "websocket")]))
        try:
            answer = await js.fetch(url, to_js({"headers": headers}, dict_converter=js.Object.fromEntries))
        except Exception as exc:
            reasons.append(f"'{endpoint.provider}' could not be reached")
            session.failed(endpoint, f"could not be reached: {type(exc).__name__}")
            continue
        upstream = answer.webSocket
        if getattr(upstream, "accept", None) is None:  # JS null: None, or Pyodide's JsNull
            reasons.append(f"'{endpoint.provider}' answered HTTP {int(answer.status)}")
            session.failed(endpoint, f"refused the Realtime upgrade with HTTP {int(answer.status)}")
            continue
        upstream.accept()
        return upstream, endpoint
    raise no_provider(reasons)


async def serve(gateway: Gateway, request: Request) -> Any:
    """The 101 with the client's end of a new pair, or raise GatewayError (an HTTP answer:
    the session was not admitted)."""
    session = await gateway.realtime.open(request)
    refusal: GatewayError | None = None
    try:
        upstream, endpoint = await _connect(session)
    except GatewayError as exc:
        refusal = exc
    client, server = js.WebSocketPair.new().object_values()
    server.accept()
    out = {"sec-websocket-protocol": session.subprotocol} if session.subprotocol else {}
    relay = session.relay
    if refusal is not None:  # the error event and the close wait in the socket for the client
        session.refuse(_JsSocket(server), refusal)
        await relay.done.wait()  # the record and the slot, before the invocation may end
        return workers.Response(None, status=101, web_socket=client, headers=out)
    proxies = _listen(relay, server, upstream)
    session.start(endpoint, _JsSocket(server), _JsSocket(upstream))
    asyncio.ensure_future(_release(relay, proxies))
    return workers.Response(None, status=101, web_socket=client, headers=out)
