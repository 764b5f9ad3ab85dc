"""JavaScript steps that never raise: a pipe or a read that rejects is an outcome to look at
(the client left, the upstream broke), and a clean-up step that fails must not replace the
cancellation or error on its way up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("flaregate.edge")


async def settled(promise: Any) -> Any:
    """The promise's value, or the exception it rejected with (never raised)."""
    try:
        return await promise
    except Exception as exc:
        return exc


def quietly(step: Callable[[], Any]) -> None:
    """Run a clean-up step (a reader let go of, a pipe stopped); a failure is only logged."""
    try:
        step()
    except Exception:
        log.debug("a stream's clean-up step failed", exc_info=True)
