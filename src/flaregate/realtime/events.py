"""The few Realtime events the gateway reads or writes itself. Every other frame is relayed
as it is, unparsed: on the edge each one crosses into Python, so the relay looks for a
type's name in the text before it pays for ``json.loads``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..accounting import MAX_TOKENS

# Markers searched in a frame's text (a cheap substring test) before it is parsed.
RESPONSE_DONE = '"response.done"'
RESPONSE_CREATE = '"response.create"'
GUARDED = ('"conversation.item.create"', '"session.update"')

# Close codes (RFC 6455 and the registered 4xxx range for applications).
NORMAL = 1000
GOING_AWAY = 1001
POLICY = 1008  # a limit or a budget, a guardrail block
TOO_BIG = 1009
UPSTREAM_ERROR = 1011  # the provider refused, dropped or broke the session
IDLE = 4000  # our own: idle timeout
DURATION = 4001  # our own: the session's time is up


def error_event(code: str, message: str, type: str = "invalid_request_error", event_id: str | None = None) -> str:
    """An ``error`` server event as OpenAI sends it (the SDK raises nothing: it is an event)."""
    return json.dumps({"type": "error", "event_id": None,
                       "error": {"type": type, "code": code, "message": message, "param": None,
                                 "event_id": event_id}}, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ResponseUsage:
    """A ``response.done``'s usage: text and audio tokens each way, cached input tokens."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS else 0


def response_done(text: str) -> tuple[str | None, str | None, ResponseUsage | None]:
    """(response id, status, usage) of a ``response.done`` frame; Nones when it is not one
    (the marker may sit inside some text) or has no sane usage."""
    try:
        event = json.loads(text)
    except ValueError:
        return None, None, None
    if not isinstance(event, dict) or event.get("type") != "response.done":
        return None, None, None
    response = event.get("response")
    if not isinstance(response, dict):
        return None, None, None
    rid = response.get("id") if isinstance(response.get("id"), str) else None
    status = response.get("status") if isinstance(response.get("status"), str) else None
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return rid, status, None
    found_in, found_out = usage.get("input_token_details"), usage.get("output_token_details")
    details_in: dict[str, Any] = found_in if isinstance(found_in, dict) else {}
    details_out: dict[str, Any] = found_out if isinstance(found_out, dict) else {}
    return rid, status, ResponseUsage(
        input_tokens=_count(usage.get("input_tokens")), output_tokens=_count(usage.get("output_tokens")),
        cached_tokens=_count(details_in.get("cached_tokens")),
        input_audio_tokens=_count(details_in.get("audio_tokens")),
        output_audio_tokens=_count(details_out.get("audio_tokens")))


def event_type(text: str) -> str | None:
    """The ``type`` of a client frame that must be read (guardrails, a response.create)."""
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event.get("type") if isinstance(event, dict) and isinstance(event.get("type"), str) else None
