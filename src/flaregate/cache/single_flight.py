"""Single-flight: identical concurrent requests share one upstream call (stampede protection).

The first request for a flight key opens the upstream call; requests that arrive while it
is in flight join it. Every participant gets its own reader (an UpstreamResponse), which
sees the same status, headers and bytes from the start, in step with the upstream: a
streamed answer reaches every reader chunk by chunk as it arrives, never held back.

There is no background pump. The request that opened the call reads the upstream body
and the others wait for each chunk it reads; only when it has left (its client went away)
does the next reader take over. That owner rule matters on the edge, where workerd lets no
request read an I/O object (a fetch body) that belongs to another. When the last reader
leaves before the end, the upstream call is closed (no one pays for tokens no one reads).

A reader leaves by being closed or by being cancelled where it waits, which for the one
pulling is in the middle of an upstream read (its host cancels it the moment its client
leaves, however silent the upstream). That read runs in a task of its own and goes on for
the others. In process they take over from it. On the edge no other request may read the
body, so the opener's request reads on for them, its close waiting until they leave or
the body ends (in production no longer than the runtime lets a request's ``waitUntil``
work run after its client left, about 30 s; then they get the interrupted stream's error).
A ``FlightRecorder`` sees every chunk once and is told, once, how the flight ended; the
cache uses it to store the answer.

A streamed flight keeps its chunks for the readers that join late (they replay from the
start), up to ``max_bytes`` (SINGLE_FLIGHT_MAX_BYTES). Past it the flight takes no one
new (a newcomer opens its own call) and keeps only what some reader has yet to read; a
reader further behind than that is cut off with FlightOverrun (its client gets the
stream's error event), the others, and the recorder, go on.

In process only: one registry per process locally, one per isolate on the edge. On the
edge (``poll=True``) a waiting reader never awaits a future or event that another request
resolves, since workerd cancels such a request as hung: it sleeps on its own timer and
looks at the flight's plain state again (10 ms, backing off to 50 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

from ..ports import DEFAULT_SINGLE_FLIGHT_MAX_BYTES, Teed, UpstreamError, UpstreamResponse

log = logging.getLogger("flaregate.single_flight")


class FlightOverrun(UpstreamError):
    """A reader fell further behind its shared stream than the flight keeps."""

    code = "single_flight_overrun"

    def __init__(self, limit: int) -> None:
        super().__init__(f"{self.code}: this request shared an identical request's upstream stream and fell more "
                         f"than {limit} bytes (SINGLE_FLIGHT_MAX_BYTES) behind it; retry it")


class FlightRecorder(Protocol):
    """Sees the flight's chunks. A recorder may also define ``opened(target, status)``,
    called once the call is open, before any chunk."""

    def feed(self, chunk: bytes) -> None: ...

    def finish(self, target: Any, status: int, ok: bool) -> None:
        """Called once: ``ok`` is False when the body ended early or in an error."""


Opener = Callable[[], Awaitable[tuple[Any, UpstreamResponse]]]


class _Flight:
    def __init__(self, key: str, registry: SingleFlight, recorder: FlightRecorder) -> None:
        self.key = key
        self.registry = registry
        self.recorder = recorder
        self.opening: asyncio.Future[tuple[Any, UpstreamResponse]] | None = None
        self.target: Any = None
        self.upstream: UpstreamResponse | None = None
        self.chunks: list[bytes] = []
        # Bounded (``SingleFlight.max_bytes``): see ``_bound``. chunks[0] is the stream's
        # chunk number ``base``; ``views``: the readers, each at its next chunk's number.
        self.base = 0
        self.kept = 0
        self.views: list[SharedResponse] = []
        self.shared = True  # newcomers may join (they replay the stream from its start)
        self.readers = 0
        self.owner_reading = True  # the opener's reader is still here: only it pulls
        self.pulling = False
        self.finished = False
        self.failure: UpstreamError | None = None
        self.mode: str | None = None  # "stream" (chunk by chunk) or "read" (the whole body)
        self._iterator: AsyncIterator[bytes] | None = None
        self._reading: asyncio.Future[None] | None = None  # an upstream read outliving its puller
        self._closed = False
        self._recorder_broken = False
        self._changed = asyncio.Event()
        self.version = 0  # bumped on every change: what polling readers watch

    async def open(self, opener: Opener) -> tuple[Any, UpstreamResponse]:
        try:
            self.target, self.upstream = await opener()
        except BaseException:
            self.finished = True
            self.registry._forget(self)
            raise
        opened = getattr(self.recorder, "opened", None)
        if opened is not None:  # a recorder that can store before the body's end needs the target
            opened(self.target, self.upstream.status)
        if self.readers == 0:  # everyone left while the call was being made
            self._finish(UpstreamError("every reader went away"))
            await self._close_upstream()
        return self.target, self.upstream

    # -- pulling -------------------------------------------------------------------------
    def _notify(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self) -> None:
        if not self.registry.poll:
            await self._changed.wait()
            return
        seen = self.version
        await _poll(lambda: self.version != seen)

    def may_pull(self, reader: SharedResponse) -> bool:
        return not self.pulling and (reader.owner or not self.owner_reading)

    def owner_left(self) -> None:
        self.owner_reading = False
        self._notify()  # a waiting follower takes over the pulling

    async def read_on_for_the_others(self) -> None:
        """The edge's opener, whose client left: read the body for the other readers (only
        its request may), until they leave or the body ends. The owner still counts as
        reading meanwhile, so no follower tries to pull."""
        while not self.finished and self.readers > 1 and self.upstream is not None:
            if not self.pulling:  # else: the read its cancelled relay left running
                self._start(self.mode or "stream")
            await self.wait_for_change()  # a read's end, or a reader leaving

    async def pull(self, wanted: str) -> None:
        """Fetch the next piece of the body for every reader (only one puller at a time)."""
        # A puller cancelled mid-read leaves the read running for the other readers; the
        # last one to leave cancels it (detach).
        await asyncio.shield(self._start(wanted))

    def _start(self, wanted: str) -> asyncio.Future[None]:
        """The next read, in a task of its own, in the puller's context (on the edge: in
        its request)."""
        assert self.upstream is not None and not self.pulling and not self.finished
        self.pulling = True
        mode = self.mode = self.mode or wanted
        read = self._reading = asyncio.ensure_future(self._read(mode))
        return read

    async def _read(self, mode: str) -> None:
        assert self.upstream is not None
        try:
            if mode == "read":
                self._append(await self.upstream.read())
                self._finish(None)
            else:
                if self._iterator is None:
                    self._iterator = aiter(self.upstream.aiter_bytes())
                try:
                    chunk = await anext(self._iterator)
                except StopAsyncIteration:
                    self._finish(None)
                else:
                    if chunk:
                        self._append(chunk)
        except UpstreamError as exc:
            self._finish(exc)
        except Exception as exc:  # e.g. a host error type; never leave the readers hanging
            self._finish(UpstreamError(type(exc).__name__))
        except BaseException:  # cancelled: no one reads on (detach), or the request is torn down
            self._finish(UpstreamError("the upstream read was cancelled"))
            self.pulling = False
            self._notify()
            await self._close_upstream()  # nobody can read on: close it now, not at the end
            raise
        finally:
            self.pulling = False
            self._notify()
        if self.finished:
            await self._close_upstream()

    def _append(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.kept += len(chunk)
        if self.kept > self.registry.max_bytes and self.mode == "stream":
            self._bound()
        self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        if self._recorder_broken:
            return
        try:
            self.recorder.feed(chunk)
        except Exception:  # recording is best effort; the answer still flows, unrecorded
            self._recorder_broken = True
            log.warning("flight recorder failed", exc_info=True)

    def _finish(self, failure: UpstreamError | None) -> None:
        if self.finished:
            return
        self.finished = True
        self.failure = failure
        try:
            if not self._recorder_broken:  # a recorder that missed a chunk must not store
                self.recorder.finish(self.target, self.upstream.status if self.upstream else 0, failure is None)
        except Exception:
            log.warning("flight recorder failed", exc_info=True)
        self.registry._forget(self)  # after the recorder stored the answer: no gap for newcomers
        self._notify()

    def _bound(self) -> None:
        """Past the cap: no one new joins (a newcomer opens its own call), and only what
        some reader has yet to read is kept. A reader that is more than the cap behind the
        newest chunk is cut off (FlightOverrun); the one that pulls is never behind."""
        if self.shared:
            self.shared = False
            self.registry.overrun += 1
            self.registry._forget(self)
        newest = self.base + len(self.chunks) - 1
        while True:
            live = [view for view in self.views if not view.cut]
            low = min((view.position for view in live), default=newest + 1)
            drop = min(low, newest + 1) - self.base
            if drop > 0:
                self.kept -= sum(len(chunk) for chunk in self.chunks[:drop])
                del self.chunks[:drop]
                self.base += drop
            if self.kept <= self.registry.max_bytes or low >= newest:
                return
            for view in live:
                if view.position == low:
                    view.cut = True

    async def _close_upstream(self) -> None:
        if self._closed:
            return
        self._closed = True
        reading = self._reading
        if reading is not None and not reading.done() and reading is not asyncio.current_task():
            reading.cancel()  # a read that outlived its puller: an iterator mid-read cannot be closed
            await asyncio.wait((reading,))
        with contextlib.suppress(Exception):
            if self._iterator is not None and hasattr(self._iterator, "aclose"):
                await self._iterator.aclose()
        with contextlib.suppress(Exception):
            if self.upstream is not None:
                await self.upstream.aclose()

    async def detach(self) -> None:
        self.readers -= 1
        self._notify()  # an opener reading on for the others looks again
        if self.readers == 0 and not self.finished and self.upstream is not None:
            self._finish(UpstreamError("every reader went away"))
            await self._close_upstream()


class SharedResponse:
    """One participant's view of a flight, shaped like an UpstreamResponse."""

    def __init__(self, flight: _Flight, upstream: UpstreamResponse, follower: bool,
                 on_close: Callable[[SharedResponse], None] | None) -> None:
        self._flight = flight
        self.status = upstream.status
        self.headers: Mapping[str, str] = upstream.headers
        self.follower = follower
        self.owner = not follower
        self.delivered = 0  # bytes this reader received
        self.position = 0  # the number of the next chunk it reads
        # Too far behind a flight over its cap to be served; so is a reader that arrives
        # after the flight dropped the stream's start.
        self.cut = flight.base > 0
        flight.views.append(self)
        self._on_close = on_close
        self._closed = False

    @property
    def recorder(self) -> FlightRecorder:
        return self._flight.recorder

    @property
    def registry_max_bytes(self) -> int:
        return self._flight.registry.max_bytes

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        flight = self._flight
        while True:
            if self.cut:
                raise FlightOverrun(self.registry_max_bytes)
            if self.position - flight.base < len(flight.chunks):
                chunk = flight.chunks[self.position - flight.base]
                self.position += 1
                self.delivered += len(chunk)
                yield chunk
            elif flight.finished:
                if flight.failure is not None:
                    raise flight.failure
                return
            elif flight.may_pull(self):
                await flight.pull("stream")
            else:
                await flight.wait_for_change()

    def tee(self) -> Teed | None:
        """The opener's split of the body (see :class:`Teed`), before anyone read it: the
        flight reads on from the copy, for its followers too."""
        flight = self._flight
        if self.follower or flight.mode is not None or flight.upstream is None:
            return None
        split = getattr(flight.upstream, "tee", None)
        teed: Teed | None = split() if split is not None else None
        return teed

    async def read(self) -> bytes:
        flight = self._flight
        while not flight.finished:
            if flight.may_pull(self):
                await flight.pull("read")
            else:
                await flight.wait_for_change()
        if flight.failure is not None:
            raise flight.failure
        if self.cut or flight.base:  # a stream's start was dropped: it cannot be read whole
            raise FlightOverrun(self.registry_max_bytes)
        body = b"".join(flight.chunks)
        self.delivered = len(body)
        return body

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ValueError):
            self._flight.views.remove(self)
        if self.owner:
            if self._flight.registry.poll:  # the edge: nobody else may read the body
                await self._flight.read_on_for_the_others()
            self._flight.owner_left()
        if self._on_close is not None:
            try:
                self._on_close(self)
            except Exception:
                log.warning("flight close hook failed", exc_info=True)
        await self._flight.detach()


async def _poll(ready: Callable[[], bool]) -> None:
    delay = _POLL_FIRST
    while not ready():
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, _POLL_MAX)


_POLL_FIRST, _POLL_MAX = 0.01, 0.05


class SingleFlight:
    def __init__(self, poll: bool = False, max_bytes: int = DEFAULT_SINGLE_FLIGHT_MAX_BYTES) -> None:
        self.poll = poll  # wait by polling: see the module's docstring
        self.max_bytes = max_bytes  # what a flight keeps of its stream (SINGLE_FLIGHT_MAX_BYTES)
        self.overrun = 0  # flights that passed it (and stopped taking newcomers)
        self._flights: dict[str, _Flight] = {}
        self.opened = 0
        self.collapsed = 0

    def __len__(self) -> int:
        return len(self._flights)

    async def join(self, key: str, opener: Opener, recorder: Callable[[], FlightRecorder],
                   on_close: Callable[[SharedResponse], None] | None = None) -> tuple[Any, SharedResponse]:
        """Open the call for ``key`` or join the one in flight; returns (target, reader).

        ``recorder`` is called only when this request opens the flight. An exception from
        the opener (e.g. every target failed) reaches every participant.
        """
        flight = self._flights.get(key)
        follower = flight is not None
        if flight is None:
            flight = _Flight(key, self, recorder())
            self._flights[key] = flight
            self.opened += 1
            flight.opening = asyncio.ensure_future(flight.open(opener))
            flight.opening.add_done_callback(_retrieve)
        else:
            self.collapsed += 1
        flight.readers += 1
        assert flight.opening is not None
        try:
            if follower and self.poll:
                opening = flight.opening
                await _poll(opening.done)
                target, upstream = opening.result()
            else:
                target, upstream = await asyncio.shield(flight.opening)
        except BaseException:
            if not follower:
                flight.owner_reading = False
            flight.readers -= 1
            flight._notify()
            if flight.readers == 0 and flight.upstream is not None and not flight.finished:
                flight._finish(UpstreamError("every reader went away"))
                asyncio.ensure_future(flight._close_upstream())
            raise
        return target, SharedResponse(flight, upstream, follower, on_close)

    def _forget(self, flight: _Flight) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]

    def stats(self) -> dict[str, int]:
        return {"in_flight": len(self._flights), "opened": self.opened, "collapsed": self.collapsed}


def _retrieve(future: asyncio.Future[Any]) -> None:
    # The opener's exception reaches the participants; this only stops "never retrieved".
    if not future.cancelled():
        future.exception()
