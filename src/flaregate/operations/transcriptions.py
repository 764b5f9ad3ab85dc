"""``POST /v1/audio/transcriptions``: OpenAI speech to text, from the route's targets that have
it (OpenAI-kind providers and the built-in mock). The body is a multipart upload
(``flaregate/multipart.py``): the text fields first (the gateway routes on ``model``), then
the one file part named ``file``, all within ``MAX_BODY_BYTES`` (413 beyond). The hosts read
a body whole under that cap, so the file is held, not streamed: an attempt that fails over
sends it again to the next target, which a streamed upload could not. It is forwarded as
multipart again, re-encoded with the same fields (``model`` the target's) and file bytes.

A JSON transcript (``json``, ``verbose_json``) is read like any JSON answer; a ``text``,
``srt`` or ``vtt`` one, or a streamed one (``stream=true``), is passed through as it comes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, WithJsonSchema

from ..config import Settings
from ..http import Request
from ..multipart import MEDIA_TYPE, invalid, read_form
from ..pipeline.context import RequestContext
from ..pipeline.spec import Answer, OperationSpec, text_estimate
from ..providers.base import TRANSCRIPTIONS
from .sse import ChatStream

PATH = "/v1/audio/transcriptions"
FILE = "file"
_PASSED_THROUGH = frozenset({"text", "srt", "vtt"})


class TranscriptionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1, max_length=256)
    file: Annotated[dict[str, Any], WithJsonSchema({
        "type": "string", "contentMediaType": "application/octet-stream",
        "description": "The audio file: the last part, after the text fields."})]
    language: StrictStr | None = None
    prompt: StrictStr | None = None
    response_format: StrictStr | None = None  # json (the default), verbose_json, text, srt, vtt
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)


def parse(request: Request, settings: Settings) -> dict[str, Any]:
    """The form as the body: its text fields (strings, in order), then ``file`` (an Upload)."""
    form = read_form(request.body, request.headers.get("content-type") or "", max_bytes=settings.max_body_bytes)
    if FILE in form.fields:
        raise invalid(f"Part {FILE!r} must be a file (Content-Disposition: form-data; name=\"{FILE}\"; "
                      "filename=\"...\").", param=FILE)
    extra = [name for name in form.files if name != FILE]
    if extra:
        raise invalid(f"Unexpected file part {extra[0][:64]!r}: the one file is named {FILE!r}.", param=extra[0][:64])
    if FILE not in form.files:
        raise invalid(f"The form has no file part {FILE!r} (it comes last, after the text fields).", param=FILE)
    return {**form.fields, FILE: form.files[FILE]}


def _answer(body: Mapping[str, Any]) -> Answer:
    passed = body.get("response_format") in _PASSED_THROUGH or str(body.get("stream")).lower() == "true"
    return "binary" if passed else "json"


def _watch(ctx: RequestContext) -> ChatStream:
    return ChatStream(False)  # a stream is passed through unread (a binary answer)


SPEC = OperationSpec(
    name="transcriptions", path=PATH, body_model=TranscriptionRequest, operation=TRANSCRIPTIONS,
    summary="OpenAI speech to text (multipart upload: text fields, then the file)",
    watch=_watch, estimate=text_estimate("prompt"), parse=parse, media_type=MEDIA_TYPE, answer=_answer,
    example={"model": "mock-1", "file": "mock audio bytes"},
    notes={"cache": "not cached: no cache key covers an upload's bytes yet",
           "output guard": "not checked: a transcript comes in five formats (JSON, text, SRT, VTT, a stream) "
                           "and no answer check reads them yet (the prompt is guarded on the way in)",
           "usage": "the tokens the provider reports (gpt-4o-transcribe), else the estimate stands "
                    "(whisper-1 reports seconds of audio, not tokens)",
           "body": "multipart: text fields before the file; the file within MAX_BODY_BYTES, held whole "
                   "(not streamed through: failover sends it again)"},
)
