"""A streamed answer the host sends natively: the upstream's bytes as they came, while the
core reads a copy for usage, the cache and the end marker (docs/architecture.md,
"Pass-through streams").

The runner makes one where nothing changes the bytes (no answer guardrail, no translation,
no request-log copy of the answer) and the transport can split the body (:class:`Teed`: the
edge's). Iterating it drives the copy: it yields the copy's events, which the host does not
send (the client has them natively) but reads for timing; ``tail`` is what the client gets
after the native body: the gateway's error event when the stream broke or was cut (after
the ending of the partial event the client may hold), else empty.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..ports import Teed, UpstreamTooLarge
from .partial_event import ending


class PassThrough:
    __slots__ = ("teed", "copy", "tail")

    def __init__(self, teed: Teed) -> None:
        self.teed = teed
        self.copy: AsyncIterator[bytes] | None = None  # the runner's relay over the copy
        self.tail = b""

    @property
    def head(self) -> bytes:
        return self.teed.head

    @property
    def native(self) -> Any:
        return self.teed.native

    def mid_event(self) -> bool:
        return bool(self.teed.pending())

    def end_with(self, error_event: bytes, message: str, code: str, cause: BaseException | None = None) -> None:
        """The stream broke or was cut: the client gets ``error_event`` after what it has.
        When the copy stopped where the client did (a break, an early end), the partial
        event it holds is ended first so that it parses (see :mod:`.partial_event`); past a
        cap the client may hold more than the copy read, so only a blank line ends it."""
        if isinstance(cause, UpstreamTooLarge):
            self.tail = b"\n\n" + error_event
            return
        error = {"message": message, "type": "api_error", "code": code, "param": None}
        self.tail = ending(self.teed.pending(), error) + error_event

    def __aiter__(self) -> PassThrough:
        return self

    async def __anext__(self) -> bytes:
        assert self.copy is not None
        return await anext(self.copy)

    async def aclose(self) -> None:
        aclose = getattr(self.copy, "aclose", None)
        if aclose is not None:
            await aclose()
