"""The copy of a pass-through stream (hosts/edge/pass_through.py), read in batches.

One read a chunk costs the Worker some 0.2 ms of Python and FFI (the bench's 20-token
stream: 46 reads, about 8 ms; ``bench.edge --floor NAME:py:tee`` against ``teeatleast``).
workerd's ``readAtLeast`` takes many chunks in one read, but a pending batch hides the bytes
it holds, and the gateway must know where the client's stream stands (a keep-alive comment
goes in between events only). So a batch is never left pending for long:

- the copy is piped natively into an ``IdentityTransformStream`` (the collector), whose
  readable side is read ``readAtLeast(_BATCH_BYTES)`` at a time;
- a batch still pending after ``_PAUSE_SECONDS`` (the upstream slowed down or went silent)
  is handed over: the pipe is stopped through its signal and the collector's writable
  closed, so the read returns what it holds. Stopping a pipe that way errors its source in
  workerd (``preventCancel`` or not), so the pipe reads one branch of a second tee of the
  copy; the other branch, the spare, holds the same bytes and becomes the copy, past the
  bytes the run handed over (skipped in a few large reads: they are buffered already). The
  caller then reads it chunk by chunk until it moves again (a position that is always
  exact while the upstream is silent) and starts a new run;
- a run also stops past ``_RUN_BYTES``, so the spare never holds more than about that.

The copy's end and its break reach the caller the same way, after every byte before them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import js
from pyodide.ffi import to_js

from .promises import quietly, settled

_BATCH_BYTES = 16 * 1024  # a read waits for this much (or the end, or a pause)
_VIEW_BYTES = 64 * 1024  # and takes at most this much
_PAUSE_SECONDS = 0.25  # a batch pending this long is handed over: well within a heartbeat
_RUN_BYTES = 1 << 20  # a run stops (as at a pause) past this much: the spare branch holds no more


class CopyBroke(Exception):
    """The upstream body failed while the copy was piped (after all it had sent): ``reason``
    is the runtime's error."""

    def __init__(self, reason: BaseException) -> None:
        super().__init__(reason)
        self.reason = reason


class BatchedCopy:
    """Runs of batched reads over ``copy``; between two runs the caller may read the copy
    directly (it is unlocked then)."""

    def __init__(self, copy: Any) -> None:
        self.copy = copy
        self.ended = False  # the copy's end was read

    async def run(self) -> AsyncIterator[bytes]:
        """The copy's bytes in batches, until it ends (``ended``), breaks (``CopyBroke``,
        raised after the bytes before it) or pauses (the run just stops, and ``copy`` is
        then a stream of what comes next)."""
        # Stopping a pipe through its signal errors its source in workerd (whatever
        # preventCancel says), so the pipe reads a branch of the copy: the other, spare,
        # keeps every byte and goes on after a pause, past the bytes this run handed over.
        batch, spare = self.copy.tee().object_values()
        collector = js.IdentityTransformStream.new()
        control = js.AbortController.new()
        options = to_js({"signal": control.signal, "preventAbort": True, "preventClose": True},
                        dict_converter=js.Object.fromEntries)
        pipe = asyncio.ensure_future(settled(batch.pipeTo(collector.writable, options)))
        reader = collector.readable.getReader(mode="byob")
        buffer = js.ArrayBuffer.new(_VIEW_BYTES)
        stopped = paused = False  # stopped: the pipe is over and the collector closed: reads drain it
        broke: BaseException | None = None
        read: asyncio.Future[Any] | None = None
        closing: asyncio.Future[Any] | None = None
        handed = 0  # bytes this run handed over
        try:
            while True:
                read = asyncio.ensure_future(settled(reader.readAtLeast(_BATCH_BYTES, js.Uint8Array.new(buffer))))
                if not stopped:
                    if handed < _RUN_BYTES:
                        await asyncio.wait((read, pipe), timeout=_PAUSE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                    if not read.done():  # paused, ended, broken or long: what the collector holds comes out
                        paused = not pipe.done()
                        if paused:
                            control.abort()
                        outcome = await pipe
                        stopped = True
                        closing = asyncio.ensure_future(settled(collector.writable.getWriter().close()))
                        if outcome is None:
                            self.ended = True
                        elif not paused:
                            broke = outcome
                result = await read
                read = None
                if isinstance(result, BaseException):
                    raise CopyBroke(result)
                if result.done:
                    break
                view = result.value
                chunk = view.to_bytes()
                handed += len(chunk)
                yield chunk
                buffer = view.buffer  # the read took the buffer over; its view hands it back
            if closing is not None:
                await closing
            if broke is not None:
                raise CopyBroke(broke)
            if paused and not self.ended:
                self.copy = spare
                spare = None
                async for rest in self._past(handed):
                    yield rest
        finally:
            if not stopped:  # the caller let go early (a cap, a client gone): stop the pipe
                quietly(control.abort)
            if read is not None and not read.done():
                read.cancel()
            if spare is not None:  # not needed: the run ended, broke or was let go
                quietly(lambda: asyncio.ensure_future(settled(spare.cancel())))

    async def _past(self, handed: int) -> AsyncIterator[bytes]:
        """Skip the ``handed`` bytes the spare branch holds again (a few large reads: they
        are there already); yield what came after them in the last read."""
        reader = self.copy.getReader(mode="byob")
        buffer = js.ArrayBuffer.new(_VIEW_BYTES)
        try:
            while handed > 0:
                result = await reader.readAtLeast(min(handed, _VIEW_BYTES), js.Uint8Array.new(buffer))
                if result.done:
                    self.ended = True
                    return
                view = result.value
                chunk = view.to_bytes()
                buffer = view.buffer
                if len(chunk) > handed:
                    yield chunk[handed:]
                handed -= min(handed, len(chunk))
        except Exception as exc:
            raise CopyBroke(exc) from None
        finally:
            quietly(reader.releaseLock)
