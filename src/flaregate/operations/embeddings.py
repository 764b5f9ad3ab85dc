"""``POST /v1/embeddings``: routed like chat, to the route's targets whose provider embeds."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from ..pipeline.context import RequestContext
from ..pipeline.spec import OperationSpec
from ..providers.base import EMBEDDINGS
from .sse import ChatStream

PATH = "/v1/embeddings"


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1, max_length=256)
    input: StrictStr | list[Any] = Field(min_length=1)


def _watch(ctx: RequestContext) -> ChatStream:
    return ChatStream(False)  # embeddings never stream; a stream flag is the provider's to refuse


SPEC = OperationSpec(
    name="embeddings", path=PATH, body_model=EmbeddingsRequest, operation=EMBEDDINGS,
    summary="OpenAI embeddings",
    watch=_watch, example={"model": "mock-1", "input": "Hello"},
    notes={"cache": "not cached: the key material of embeddings inputs is not specified yet",
           "output guard": "an embedding has no answer text to check"},
)
