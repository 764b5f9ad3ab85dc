"""The Realtime settings (``REALTIME_*``): session limits and the client secrets' lifetime."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

REALTIME_VARS = {
    "REALTIME_MAX_SESSIONS_PER_KEY": "max_sessions_per_key",
    "REALTIME_MAX_SESSION_SECONDS": "max_session_seconds",
    "REALTIME_IDLE_TIMEOUT_SECONDS": "idle_timeout_seconds",
    "REALTIME_MAX_MESSAGE_BYTES": "max_message_bytes",
    "REALTIME_MAX_MESSAGES_PER_SECOND": "max_messages_per_second",
    "REALTIME_SLOT_TTL_SECONDS": "slot_ttl_seconds",
    "REALTIME_CLIENT_SECRET_SECONDS": "client_secret_seconds",
    "REALTIME_AZURE_API_VERSIONS": "azure_api_versions",
}


class RealtimeSettings(BaseModel):
    """Limits of one ``/v1/realtime`` session and of a key's sessions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_sessions_per_key: int = Field(default=10, ge=1)  # open at once, across isolates / replicas
    max_session_seconds: PositiveFloat = 1800.0  # OpenAI's own cap is 30 minutes
    idle_timeout_seconds: PositiveFloat = 300.0  # no frame either way for this long: closed
    max_message_bytes: int = Field(default=2_000_000, ge=1024)  # a client frame (audio appends are base64)
    max_messages_per_second: PositiveFloat = 200.0  # client frames, over a one-second window
    # A session's slot expires this long after its last heartbeat (a third of it): a crashed
    # isolate or process cannot hold a slot for longer.
    slot_ttl_seconds: PositiveFloat = 30.0
    client_secret_seconds: int = Field(default=600, ge=10, le=7200)  # the default; a request may ask less
    # Providers reached with Azure OpenAI's paths: provider name -> api-version.
    azure_api_versions: dict[str, str] = {}


def realtime_from_vars(vars: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for var, field in REALTIME_VARS.items():
        value = vars.get(var, "").strip()
        if value:
            data[field] = json.loads(value) if field == "azure_api_versions" else value
    return data
