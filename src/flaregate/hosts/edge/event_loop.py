"""One runtime callback per batch of ready asyncio callbacks, not one per callback.

Pyodide's event loop (``WebLoop``) hands every ``call_soon`` to JavaScript on its own: a
``create_once_callable`` proxy and a fresh ``MessageChannel`` whose message re-enters
Python. Under workerd that is the largest single item of a request's JavaScript time
(``bench.edge_profile``: the channel, its ports and ``postMessage``), and one await of a JS
promise costs two of them (the task's wake-up and the loop's own done callback on the
future). Here the ready callbacks of one Worker request wait in a queue, and one runtime
callback runs every callback that is ready by then, as CPython's own loop runs its ready
queue once per turn. That callback is a microtask (``queueMicrotask``), which is how a
JavaScript ``await`` resumes; WebLoop's macrotask is there to keep a browser page responsive,
which a Worker has none of. A chain of batches that only reschedule each other yields to the
runtime's next turn after ``MAX_MICROTASK_CHAIN``, so Python that spins on
``asyncio.sleep(0)`` still lets I/O in.

When a JavaScript promise that Python awaits settles, Pyodide calls back into Python from the
promise's reaction, which is itself a microtask, to resolve the awaiting future.
:meth:`ReadyBatches.settle` stands in for Pyodide's resolvers: the callbacks that the
resolution makes ready (the awaiting task's next step, and what that step makes ready in
turn, up to ``MAX_MICROTASK_CHAIN`` rounds) run right there, before the reaction returns,
instead of from a microtask queued for them. That is the runtime callback each await
otherwise cost: a ``queueMicrotask`` and a once-callable proxy for it. A rejection whose
reason is no exception (``undefined``: every promise of a cancelled stream) is raised as
:class:`PromiseRejected`; Pyodide's own resolver hands that value to ``set_exception``,
which refuses it, and the awaiting coroutine never resumes.

Batches are per request (the :class:`RequestScope` in the callback's context): workerd binds
I/O to the request whose code started it, and each runtime callback runs in the request in
which it was scheduled, so callbacks of different requests never share one. Callbacks
without a request (Durable Object calls, import time) are not batched: each is a microtask of
its own, in the runtime context that scheduled it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections import deque
from collections.abc import Callable
from typing import Any

Schedule = Callable[[Callable[[], None]], None]  # run the callable once, from the runtime
# Batches scheduled one from another as microtasks before one waits for the runtime's next
# turn: Python code that keeps rescheduling itself (``await asyncio.sleep(0)`` in a loop)
# must not keep I/O out for good.
MAX_MICROTASK_CHAIN = 64


_UNOWNED = 0  # the owner key of callbacks without a request (never an id())


class PromiseRejected(Exception):
    """A JavaScript promise that Python awaited rejected with a value that is no exception:
    ``undefined`` (what every promise of a stream cancelled without a reason rejects with,
    e.g. a response stream whose client went away), a string, a plain object. ``reason`` is
    that value."""

    def __init__(self, reason: Any) -> None:
        super().__init__(f"promise rejected with {reason!r}")
        self.reason = reason


class ReadyBatches:
    """``call_soon`` for ``loop``: callbacks whose context has ``key`` set queue per value
    and run together from one ``microtask``; each other callback is a microtask of its own.
    A batch made ready by a chain of ``MAX_MICROTASK_CHAIN`` batches that each scheduled the
    next waits for ``schedule`` (the runtime's next turn) instead.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, microtask: Schedule, schedule: Schedule,
                 key: contextvars.ContextVar[Any]) -> None:
        self._loop = loop
        self._microtask = microtask
        self._schedule = schedule
        self._key = key
        self._queues: dict[int, deque[asyncio.Handle]] = {}
        self._running: tuple[int, int] | None = None  # owner and chain length of the batch running now
        self._settling: deque[asyncio.Handle] | None = None  # where settle() collects the ready callbacks

    def call_soon(self, callback: Callable[..., Any], *args: Any,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        ctx = context if context is not None else contextvars.copy_context()
        handle = asyncio.Handle(callback, args, self._loop, context=ctx)
        if self._settling is not None:  # made ready by a settling promise: runs before it returns
            self._settling.append(handle)
            return handle
        owner = ctx.get(self._key, None)
        if owner is None:
            # No request to batch by: a microtask of its own, in the runtime context that
            # scheduled it, as WebLoop's MessageChannel would be.
            self._start(_UNOWNED, deque([handle]), self._chain(_UNOWNED))
            return handle
        key = id(owner)
        queue = self._queues.get(key)
        if queue is None:  # the first ready callback of this request: one runtime callback
            queue = self._queues[key] = deque()
            self._start(key, queue, self._chain(key))
        queue.append(handle)
        return handle

    def settle(self, resolve: Callable[[Any], object], future: asyncio.Future[Any], value: Any) -> None:
        """Resolve ``future`` with ``resolve(value)`` (its ``set_result`` or ``set_exception``)
        from a settling JavaScript promise's reaction, and run in that reaction the callbacks
        this makes ready. The reaction runs in the context of the request whose promise it
        is, as the microtask it would otherwise queue would."""
        if future.done():
            return
        ready: deque[asyncio.Handle] = deque()
        outer, self._settling = self._settling, ready
        try:  # a settle inside a settle (a JSPI suspension let the runtime in) runs its own
            resolve(value)
            self._drain(ready)
        finally:
            self._settling = outer

    def settle_rejection(self, future: asyncio.Future[Any], reason: Any) -> None:
        """:meth:`settle` of a rejection. A reason that is no exception is raised as
        :class:`PromiseRejected`: given to ``set_exception`` as it is (as Pyodide's own
        resolver does), it would be refused with a TypeError, and the coroutine awaiting the
        promise would wait forever (after a client left: until workerd cancels the request
        as hung, with the stream's cleanup never run)."""
        if not isinstance(reason, BaseException):
            reason = PromiseRejected(reason)
        self.settle(future.set_exception, future, reason)

    def _drain(self, ready: deque[asyncio.Handle]) -> None:
        for _ in range(MAX_MICROTASK_CHAIN):
            if not ready:
                return
            batch, ready = ready, deque()
            self._settling = ready  # made ready by these: the next round
            stopped = _run_each(batch)
            if stopped is not None:
                batch.extend(ready)
                self._later(batch)
                self._escalate(stopped)
                return
        self._later(ready)  # rounds that keep making each other ready: the runtime's next turn

    def _later(self, handles: deque[asyncio.Handle]) -> None:
        if handles:
            self._schedule(lambda: self._run(_UNOWNED, handles, 0))

    def _chain(self, owner: int) -> int:
        """How many batches of ``owner``, each scheduled by the one before, lead to a new one."""
        running = self._running
        return running[1] + 1 if running is not None and running[0] == owner else 0

    def _start(self, owner: int, queue: deque[asyncio.Handle], chain: int) -> None:
        if chain < MAX_MICROTASK_CHAIN:
            self._microtask(lambda: self._run(owner, queue, chain))
        else:
            self._schedule(lambda: self._run(owner, queue, 0))

    def _run(self, owner: int, queue: deque[asyncio.Handle], chain: int) -> None:
        # Callbacks made ready while these run wait for the next batch (a new runtime
        # callback), so a callback that keeps rescheduling itself cannot starve I/O.
        if self._queues.get(owner) is queue:
            del self._queues[owner]
        outer, self._running = self._running, (owner, chain)
        try:
            stopped = _run_each(queue)
            if stopped is not None:
                if queue:  # the rest still run, from a later runtime callback
                    self._requeue(owner, queue)
                self._escalate(stopped)
        finally:
            self._running = outer

    def _escalate(self, exc: SystemExit | KeyboardInterrupt) -> None:
        # What WebLoop's own runner does with them: its handler when set, else raise.
        if isinstance(exc, SystemExit):
            handler = getattr(self._loop, "_system_exit_handler", None)
            if handler is None:
                raise exc
            handler(exc.code)
        else:
            handler = getattr(self._loop, "_keyboard_interrupt_handler", None)
            if handler is None:
                raise exc
            handler()

    def _requeue(self, owner: int, queue: deque[asyncio.Handle]) -> None:
        pending = self._queues.get(owner)
        if pending is None:
            self._queues[owner] = queue
            self._schedule(lambda: self._run(owner, queue, 0))
        else:
            pending.extendleft(reversed(queue))


def _run_each(handles: deque[asyncio.Handle]) -> SystemExit | KeyboardInterrupt | None:
    """Run ``handles`` in order, skipping cancelled ones. A handle reports its exception to
    the loop's handler, except these two: at one of them this stops and returns it, and the
    handles not yet run stay in ``handles``."""
    while handles:
        handle = handles.popleft()
        if handle._cancelled:  # what cancelled() reads, without a method call per callback
            continue
        try:
            handle._run()
        except (SystemExit, KeyboardInterrupt) as exc:
            return exc
    return None


_tried = False


def install(key: contextvars.ContextVar[Any]) -> bool:
    """Batch the running Pyodide loop's ``call_soon`` by ``key``, once per isolate (the
    later calls return at once); False when there is no Pyodide loop (CPython, tests) or
    this is not the first call."""
    global _tried
    if _tried:
        return False
    _tried = True
    try:
        import js
        from pyodide.ffi import create_once_callable
        from pyodide.webloop import WebLoop
        from pyodide_js._api import scheduleCallback  # type: ignore[import-not-found]
    except ImportError:
        return False
    loop = asyncio.get_event_loop()
    if not isinstance(loop, WebLoop):
        return False

    def schedule(run: Callable[[], None]) -> None:
        # As WebLoop.call_later schedules: a once-callable proxy, run_sync allowed inside.
        scheduleCallback(create_once_callable(run, _may_syncify=True), 0)  # type: ignore[call-arg]

    def microtask(run: Callable[[], None]) -> None:
        js.queueMicrotask(create_once_callable(run, _may_syncify=True))  # type: ignore[call-arg]

    batches = ReadyBatches(loop, microtask, schedule, key)
    loop.call_soon = batches.call_soon  # type: ignore[method-assign]  # asyncio looks it up on the loop
    _settle_awaits_with(batches)
    return True


def _settle_awaits_with(batches: ReadyBatches) -> None:
    """Pyodide's ``await`` of a JS promise asks ``_pyodide._future_helper`` for the future's
    two resolvers each time, and hands them to the promise's ``then``; these resolve the
    future through :meth:`ReadyBatches.settle`."""
    try:
        import _pyodide._future_helper as helper  # type: ignore[import-not-found]
    except ImportError:
        return
    if not hasattr(helper, "get_future_resolvers"):
        return  # another Pyodide: its awaits keep their own resolvers
    settle, settle_rejection = batches.settle, batches.settle_rejection

    def get_future_resolvers(future: asyncio.Future[Any]) -> tuple[Callable[[Any], None], Callable[[Any], None]]:
        on_value = functools.partial(settle, future.set_result, future)
        on_error = functools.partial(settle_rejection, future)
        return on_value, on_error

    helper.get_future_resolvers = get_future_resolvers

