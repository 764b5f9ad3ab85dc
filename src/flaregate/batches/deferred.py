"""The Files and Batches APIs built on their first use. The gateway holds this stand-in from
start-up: it declares the routes (``paths.py``) and builds the real :class:`Batches` (importing
``api``, ``files``, ``runner``, ``jsonl`` and their pydantic models) when a request reaches
one of them or the host asks for it. On the edge that keeps some 60 KB of Python out of a
Worker's start-up; the local host asks at once (its batch worker runs from the start)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..http import Request, Response
from ..routes import Handler, Route
from . import paths

if TYPE_CHECKING:
    from .api import Batches


class DeferredBatches:
    def __init__(self, build: Callable[[], Batches]) -> None:
        self._build = build
        self._built: Batches | None = None
        # Set by the host before or after the build: start (or resume) running a batch.
        self._wake: Callable[[str, str], None] | None = None

    @property
    def wake(self) -> Callable[[str, str], None] | None:
        return self._wake

    @wake.setter
    def wake(self, wake: Callable[[str, str], None]) -> None:
        self._wake = wake
        if self._built is not None:
            self._built.wake = wake

    def get(self) -> Batches:
        """The APIs, built now if they are not yet."""
        if self._built is None:
            self._built = self._build()
            if self._wake is not None:
                self._built.wake = self._wake
        return self._built

    def routes(self) -> list[Route]:
        return paths.routes(self._handler)

    def _handler(self, name: str) -> Handler:
        async def handle(request: Request, out: dict[str, str]) -> Response:
            return await self.get().handlers[name](request, out)
        handle.__name__ = name.replace(".", "_")
        return handle
