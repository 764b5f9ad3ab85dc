"""``POST /v1/moderations``: OpenAI's moderation verdicts, from the route's targets that have
them (OpenAI-kind providers and the built-in mock)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from ..pipeline.context import RequestContext
from ..pipeline.spec import OperationSpec, text_estimate
from ..providers.base import MODERATIONS
from .sse import ChatStream

PATH = "/v1/moderations"


class ModerationsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1, max_length=256)  # required here: the gateway routes on it
    input: StrictStr | list[StrictStr | dict[str, Any]] = Field(min_length=1)


def _free(answer: Any) -> tuple[int, int]:
    return 0, 0  # OpenAI does not bill moderations


def _watch(ctx: RequestContext) -> ChatStream:
    return ChatStream(False)  # moderations never stream


SPEC = OperationSpec(
    name="moderations", path=PATH, body_model=ModerationsRequest, operation=MODERATIONS,
    summary="OpenAI moderations",
    watch=_watch, estimate=text_estimate("input"), usage=_free,
    example={"model": "mock-1", "input": "Hello"},
    notes={"cache": "not cached: a verdict is cheap to ask again and changes with the provider's model",
           "output guard": "a verdict has no answer text to check (the input is guarded on the way in)",
           "usage": "settled at zero tokens: OpenAI does not bill moderations"},
)
