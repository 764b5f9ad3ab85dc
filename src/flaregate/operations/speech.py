"""``POST /v1/audio/speech``: OpenAI text to speech, from the route's targets that have it
(OpenAI-kind providers and the built-in mock). The answer is audio: passed through to the
client chunk by chunk as the provider sends it, with its content-type, never held whole."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from ..pipeline.context import RequestContext
from ..pipeline.spec import OperationSpec, binary_answer, no_usage, text_estimate
from ..providers.base import SPEECH
from .sse import ChatStream

PATH = "/v1/audio/speech"


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1, max_length=256)
    input: StrictStr = Field(min_length=1, max_length=4096)
    voice: StrictStr | dict[str, Any]
    response_format: StrictStr | None = None  # mp3 (the default), opus, aac, flac, wav, pcm
    speed: float | None = Field(default=None, ge=0.25, le=4.0)


def _watch(ctx: RequestContext) -> ChatStream:
    return ChatStream(False)  # unused: the answer is binary


SPEC = OperationSpec(
    name="speech", path=PATH, body_model=SpeechRequest, operation=SPEECH,
    summary="OpenAI text to speech (audio passed through as it comes)",
    watch=_watch, estimate=text_estimate("input"), usage=no_usage, answer=binary_answer,
    example={"model": "mock-1", "input": "Hello", "voice": "alloy"},
    notes={"cache": "not cached: audio is large, and a binary answer is passed through, never held",
           "output guard": "audio has no text to check (the input is guarded on the way in)",
           "usage": "an audio answer reports none: the estimate stands"},
)
