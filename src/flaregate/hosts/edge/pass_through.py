"""A pass-through stream on the Worker: the upstream's body reaches the client natively.

The response is an identity ``TransformStream``'s readable side. The native branch of the
split upstream body is piped into its writable side by the runtime (``pipeTo`` with
``preventClose`` and ``preventAbort``: the response outlives the pipe), so no chunk crosses
into Python. Everything the gateway adds goes in through the stream's controller, which
does not need the writable's lock the pipe holds: the peeked head first, an SSE comment
while the upstream is silent, and at the end the gateway's error event when the copy says
the stream broke or was cut, then the close. Meanwhile the core's relay reads the copy
(usage, the cache, the end marker, the caps), in batches while it flows
(hosts/edge/batched_copy.py: a pause hands a batch over, so the copy's view is exact when
the upstream is silent, which is when a comment may go in).

The comment is how a client that left is found (workerd notices one only when it writes to
it): it goes in only between two events (the copy's view), only when the response holds
nothing queued (so no chunk of the pipe is overtaken), once the copy has not moved for
``heartbeat`` seconds (one to two: it is looked at every ``heartbeat``, not timed per chunk). A controller that refuses it, or a pipe that failed while the copy reads
on, means the client is gone: the copy is closed, and with it the upstream call.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import js
from pyodide.ffi import create_once_callable, to_js

from ...pipeline.pass_through import PassThrough
from .promises import settled

log = logging.getLogger("flaregate.edge")

# How long the pipe gets to hand over what the upstream sent before the copy's end (the
# same body: the native side ends with it) before the gateway's error event goes in anyway.
_SETTLE_SECONDS = 5.0
# What the response may hold for a slow client before the copy stops being read. Reading the
# copy is what pulls the upstream body, for both branches: were it read on while the client
# lags, the client's branch would buffer the stream (up to UPSTREAM_MAX_STREAM_BYTES).
_QUEUE_BYTES = 256 * 1024
_DRAIN_POLL_SECONDS = (0.01, 0.1)  # the first and the longest wait for the client to take some
_CHECK_EVERY_BYTES = 64 * 1024  # the copy looks at the response's queue this often (a JS read)


class _Copy:
    """How often the copy moved: the heartbeat looks whether it did since its last look
    (a count, not a clock read per chunk)."""

    __slots__ = ("moves",)

    def __init__(self) -> None:
        self.moves = 0


def respond(body: PassThrough, heartbeat: float | None, beat: bytes) -> tuple[Any, Any]:
    """The response's readable stream and the coroutine that runs the stream (for
    ``waitUntil``)."""
    controllers: list[Any] = []
    transformer = to_js({"start": create_once_callable(controllers.append)}, dict_converter=js.Object.fromEntries)
    # Counted in bytes by the runtime's own strategy (no Python per chunk): an empty queue
    # (desiredSize at its mark) means the pipe holds nothing back, so a comment cannot
    # overtake a chunk; a full one, that the client lags (see _QUEUE_BYTES).
    strategy = js.ByteLengthQueuingStrategy.new(to_js({"highWaterMark": _QUEUE_BYTES},
                                                      dict_converter=js.Object.fromEntries))
    stream = js.TransformStream.new(transformer, strategy, strategy)
    return stream.readable, pump(body, stream.writable, controllers[0], heartbeat, beat)


async def pump(body: PassThrough, writable: Any, controller: Any, heartbeat: float | None, beat: bytes) -> None:
    """Send ``body`` to the client (see the module's docstring)."""
    copy = _Copy()
    follow = asyncio.ensure_future(_follow(body, copy, controller))
    pipe: asyncio.Future[Any] | None = None
    gone = False
    try:
        if body.head:
            controller.enqueue(to_js(body.head))
        options = to_js({"preventClose": True, "preventAbort": True}, dict_converter=js.Object.fromEntries)
        pipe = asyncio.ensure_future(settled(body.native.pipeTo(writable, options)))
        gone = await _watch(body, controller, pipe, follow, copy, heartbeat, beat)
        if not gone and body.tail:  # broke or cut: what the pipe still has goes out first
            await asyncio.wait((pipe,), timeout=_SETTLE_SECONDS)
        elif not gone:
            await asyncio.wait((pipe,))  # the copy ended whole: the native side ends with it
    except Exception:
        log.debug("a pass-through stream stopped early", exc_info=True)
        gone = True
    finally:
        if not follow.done():  # the client left (or this task was cancelled)
            log.debug("the client left a pass-through stream: its upstream call is closed")
            follow.cancel()
            await asyncio.wait((follow,))
        await body.aclose()  # the core's end of the stream (closes the upstream if it is not over)
        _finish(controller, b"" if gone else body.tail)


async def _watch(body: PassThrough, controller: Any, pipe: asyncio.Future[Any], follow: asyncio.Future[None],
                 copy: _Copy, heartbeat: float | None, beat: bytes) -> bool:
    """Until the copy ends: True when the client is found gone on the way."""
    loop = asyncio.get_running_loop()
    moved_at, seen = loop.time(), copy.moves
    while not follow.done():
        if pipe.done():
            # The native side ended: the copy, the same body, ends with it at once, unless
            # the pipe failed because the client left (the runtime cancelled the response).
            await asyncio.wait((follow,), timeout=heartbeat if heartbeat is not None else _SETTLE_SECONDS)
            return not follow.done()
        wait = None if heartbeat is None else max(0.0, moved_at + heartbeat - loop.time())
        await asyncio.wait((pipe, follow), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        if heartbeat is None or pipe.done() or follow.done():
            continue
        now = loop.time()
        if copy.moves != seen:  # it moved since the last look: a silence starts at most now
            moved_at, seen = now, copy.moves
            continue
        if now - moved_at < heartbeat:
            continue
        moved_at = now
        if body.mid_event() or not _idle(controller):
            continue  # inside an event, or the client is still taking chunks: look again later
        try:
            controller.enqueue(to_js(beat))
        except Exception:
            return True  # the runtime cancelled the response: the client left
    return False


def _idle(controller: Any) -> bool:
    """Whether the response holds no queued chunk (nothing the pipe still has to pass)."""
    size = controller.desiredSize
    return isinstance(size, int | float) and size >= _QUEUE_BYTES


def _full(controller: Any) -> bool:
    """Whether the response holds all it may for a client that lags."""
    size = controller.desiredSize
    return isinstance(size, int | float) and size <= 0


async def _follow(body: PassThrough, copy: _Copy, controller: Any) -> None:
    """Drive the core's relay over the copy; its chunks are the client's already. While
    the client lags, the copy waits for it (see _QUEUE_BYTES)."""
    unchecked = 0
    try:
        async for chunk in body:
            copy.moves += 1
            unchecked += len(chunk)
            if unchecked < _CHECK_EVERY_BYTES:  # a short stream never looks: no JS call per chunk
                continue
            unchecked = 0
            wait = _DRAIN_POLL_SECONDS[0]
            while _full(controller):  # no promise says when it drains: look again, backing off
                await asyncio.sleep(wait)
                wait = min(wait * 2, _DRAIN_POLL_SECONDS[1])
                copy.moves += 1  # the client is taking bytes, not waiting on a silence
    except Exception:
        log.warning("reading a pass-through stream's copy stopped early", exc_info=True)


def _finish(controller: Any, tail: bytes) -> None:
    """The gateway's last bytes, then the end (the readable closes once they are read)."""
    try:
        if tail:
            controller.enqueue(to_js(tail))
        controller.terminate()
    except Exception:
        log.debug("ending a pass-through stream failed (the client left?)", exc_info=True)
