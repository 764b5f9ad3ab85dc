"""The standalone stream (``GET /mcp`` of a handshake-era session): what the servers send
on their own, not tied to a call, passed to the client on one SSE stream.

Each server of the session that offers a stream (a GET on its endpoint with its upstream
session) is read at once; their events are merged in arrival order. A server's request
(``roots/list``, ``sampling/createMessage``, ``elicitation/create``, ``ping``) gets the id
``flaregate:<server>:<its id>`` as on a call's stream, so the client's answer, POSTed,
goes back to that server; a resource URI in ``notifications/resources/updated`` is
wrapped as the lists wrap it; a ``notifications/tools/list_changed`` also drops the
server's cached tool list. The stream ends when every server's has (the client opens a
new one, as the spec has it) or when the client goes away (the servers' streams are
closed then).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ..ports import UpstreamError, UpstreamResponse
from ..sse_buffer import EventBuffer, parse_event, split_events
from .catalog import wrap_uri
from .jsonrpc import encode

SERVER_REQUEST = "flaregate:"  # the id prefix of a server's request relayed to the client


def tagged(server: str, message: dict[str, Any]) -> dict[str, Any]:
    """A server's request with an id that names the server (the client's answer finds it)."""
    return {**message, "id": f"{SERVER_REQUEST}{server}:{json.dumps(message['id'])}"}


def rewrite(server: str, message: dict[str, Any], list_changed: Callable[[str], None]) -> dict[str, Any] | None:
    """One message of a server's standalone stream as the client gets it (None: not passed)."""
    method = message.get("method")
    if not isinstance(method, str):
        return None  # a response has nobody waiting for it here
    if "id" in message:
        return tagged(server, message)
    if method == "notifications/tools/list_changed":
        list_changed(server)
    params = message.get("params")
    if method == "notifications/resources/updated" and isinstance(params, dict) and isinstance(params.get("uri"), str):
        return {**message, "params": {**params, "uri": wrap_uri(server, params["uri"])}}
    return message


async def merged(streams: Mapping[str, UpstreamResponse], max_event_bytes: int,
                 list_changed: Callable[[str], None], sent: list[int]) -> AsyncIterator[bytes]:
    """The servers' streams as one SSE stream of ``message`` events (``sent``: the bytes
    yielded so far, for the record)."""
    buffers = {name: EventBuffer(max_event_bytes) for name in streams}
    readers = {name: response.aiter_bytes().__aiter__() for name, response in streams.items()}
    pending: dict[asyncio.Future[bytes], str] = {
        asyncio.ensure_future(reader.__anext__()): name for name, reader in readers.items()}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                name = pending.pop(future)
                try:
                    chunk = future.result()
                except (StopAsyncIteration, UpstreamError):
                    continue  # that server's stream ended (or broke off); the others go on
                region = buffers[name].feed(chunk)
                out = _events(name, region, list_changed) if region else b""
                if out:
                    sent[0] += len(out)
                    yield out
                pending[asyncio.ensure_future(readers[name].__anext__())] = name
    finally:
        for future in pending:
            future.cancel()
        for response in streams.values():
            try:
                await response.aclose()
            except Exception:  # closing a stream we no longer read: nothing to lose
                pass


def _events(server: str, region: bytes, list_changed: Callable[[str], None]) -> bytes:
    out = []
    for raw in split_events(region):
        name, data = parse_event(raw)
        if not data or name not in (None, "message"):
            continue  # priming events and comments stay upstream
        try:
            message = json.loads(data)
        except ValueError:
            continue
        passed = rewrite(server, message, list_changed) if isinstance(message, dict) else None
        if passed is not None:
            out.append(b"event: message\ndata: " + encode(passed) + b"\n\n")
    return b"".join(out)
