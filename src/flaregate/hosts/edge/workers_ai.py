"""The core's ``AiBinding`` port over the Worker's Workers AI binding (``env.AI``).

Wire it into ``Ports(ai=...)`` with a lookup of the current request's binding, e.g.
``WorkersAiBinding(lambda: current().env.AI)``: ``env`` arrives with each request. The SDK's
binding wrapper converts the inputs dict to a JS object; the answer is a dict, or for
``stream: true`` a JS ReadableStream of SSE bytes, read here chunk by chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from ...ports import UpstreamError


def _plain(value: Any) -> Any:
    return value.to_py() if hasattr(value, "to_py") else value


async def _chunks(stream: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield chunk.to_bytes() if hasattr(chunk, "to_bytes") else bytes(chunk)
    except UpstreamError:
        raise
    except Exception as exc:  # a JsException from the stream
        raise UpstreamError(f"Workers AI stream failed: {(str(exc) or type(exc).__name__)[:200]}") from None


class WorkersAiBinding:
    def __init__(self, lookup: Callable[[], Any]) -> None:
        self._lookup = lookup

    async def run(self, model: str, inputs: dict[str, Any]) -> Any:
        try:
            result = await self._lookup().run(model, inputs)
        except Exception as exc:  # the binding rejects: model missing, capacity, bad inputs
            raise UpstreamError(f"Workers AI binding: {(str(exc) or type(exc).__name__)[:200]}") from None
        if inputs.get("stream"):
            return _chunks(result)
        return _plain(result)
