"""``POST /v1/images/generations``: OpenAI image generation, from the route's targets that
have it (OpenAI-kind providers and the built-in mock). A streamed generation (``stream:
true``, partial images as SSE) is passed through as it comes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from ..pipeline.context import RequestContext
from ..pipeline.spec import Answer, OperationSpec, text_estimate
from ..providers.base import IMAGES
from .sse import ChatStream

PATH = "/v1/images/generations"


class ImagesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1, max_length=256)
    prompt: StrictStr = Field(min_length=1, max_length=32000)
    n: int | None = Field(default=None, ge=1, le=10)
    response_format: StrictStr | None = None  # "url" or "b64_json"
    stream: StrictBool = False


def _answer(body: Mapping[str, Any]) -> Answer:
    return "binary" if body.get("stream") is True else "json"


def _watch(ctx: RequestContext) -> ChatStream:
    return ChatStream(False)  # a stream is passed through unread (a binary answer)


SPEC = OperationSpec(
    name="images", path=PATH, body_model=ImagesRequest, operation=IMAGES,
    summary="OpenAI image generation",
    watch=_watch, estimate=text_estimate("prompt"), answer=_answer,
    example={"model": "mock-1", "prompt": "A lighthouse at dusk", "response_format": "b64_json"},
    notes={"cache": "not cached: a generation is meant to differ each time, and an image is large",
           "output guard": "an image is no text to check (the prompt is guarded on the way in)",
           "usage": "the tokens the provider reports (gpt-image-1), else the estimate stands; a per-image "
                    "price is not modelled yet (a route's prices are per token)",
           "stream": "stream: true is passed through as it comes (partial images), unread"},
)
