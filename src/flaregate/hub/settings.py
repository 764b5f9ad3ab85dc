"""The request-log store's settings (``LOG_RETENTION_*_SECONDS``, ``LOG_BODIES``,
``LOG_BODY_MAX_BYTES``, ``LOG_PRIVATE_ROUTES``, ``LOG_UNAUTHENTICATED_*``, ``LOG_MAX_BYTES``,
``LOG_SAMPLE_INFO_PER_SECOND``); the store is
hub/request_logs.py."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RequestLogSettings(BaseModel):
    """The request-log store (hub/request_logs.py): retention per level, seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    debug_seconds: float = Field(default=3600, gt=0)
    info_seconds: float = Field(default=86400, gt=0)
    warn_seconds: float = Field(default=7 * 86400, gt=0)
    error_seconds: float = Field(default=30 * 86400, gt=0)
    # LOG_BODIES: which bodies a record keeps (redacted, capped, never for private keys/routes).
    bodies: Literal["off", "request", "response", "both"] = "off"
    body_max_bytes: int = Field(default=16_384, ge=256, le=1_000_000)
    private_routes: tuple[str, ...] = ()  # LOG_PRIVATE_ROUTES: model aliases / paths (globs) never logged
    # Records of requests refused before a key was known (401/403/429, no key_id): a bucket
    # of their own, this many rows at most (oldest out first), kept this long.
    unauthenticated_max_records: int = Field(default=10_000, ge=1, le=1_000_000)
    unauthenticated_seconds: float = Field(default=3600, gt=0)
    # LOG_MAX_BYTES: the store's byte budget (per host; on the edge per hub object, whose
    # SQLite holds 10 GB): past it the class furthest over its share loses its oldest rows.
    max_bytes: int = Field(default=1024**3, ge=16_384, le=9 * 1024**3)
    # LOG_SAMPLE_INFO_PER_SECOND: successful info records kept per second (per store) before
    # sampling starts; 0 keeps every one. Errors and warnings are always kept.
    sample_info_per_second: float = Field(default=0, ge=0, le=1_000_000)

    def retention(self) -> dict[str, float]:
        return {"debug": self.debug_seconds, "info": self.info_seconds, "warn": self.warn_seconds,
                "error": self.error_seconds, "unauthenticated": self.unauthenticated_seconds}
