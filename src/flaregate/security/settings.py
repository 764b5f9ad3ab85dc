"""The security settings (``FLAREGATE_SIGNING_SECRET``, ``FLAREGATE_OBSERVER_KEY``,
``SIGNED_ROUTES``, ``MAX_*``, ``CORS_*``, ``ANONYMIZE_IPS``, ``AUTH_FAILURE_*``, ``WEBHOOK_*``):
signing, the read-only observer key, input limits, CORS, privacy, the failed-authentication
throttle, webhooks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, SecretStr


class SecuritySettings(BaseModel):
    """Request signing, input limits, CORS, privacy and webhook delivery."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signing_secret: SecretStr | None = None  # HMAC key for signed requests; default: the admin key
    signed_routes: tuple[str, ...] = ("/admin/",)  # path prefixes that must be signed
    signature_max_age_seconds: int = Field(default=300, ge=1, le=86_400)
    key_cache_seconds: float = Field(default=30.0, ge=0)  # stored-key lookups cached per isolate
    # The read-only operator key: /metrics, /ws, /v1/analytics, /v1/logs (no bodies); never /admin/.
    observer_key: SecretStr | None = None
    # More failed authentications than this from one network (IPv4 /24, IPv6 /48) within the
    # window: 429 too_many_auth_failures until the window passes (auth_throttle.py). 0: off.
    auth_failure_limit: int = Field(default=20, ge=0)
    auth_failure_window_seconds: float = Field(default=10.0, gt=0, le=3600)
    max_messages: int = Field(default=2048, ge=1)
    max_message_chars: int = Field(default=500_000, ge=1)
    max_json_depth: int = Field(default=64, ge=2, le=900)
    max_header_bytes: int = Field(default=32_768, ge=1024)
    max_header_count: int = Field(default=100, ge=8)
    cors_allow_origins: tuple[str, ...] = ()  # empty: CORS off; "*" allows any origin
    cors_max_age_seconds: int = Field(default=600, ge=0)
    anonymize_ips: bool = True
    webhook_allow_private_targets: bool = False  # development only: loopback/private receivers
    webhook_max_attempts: int = Field(default=5, ge=1, le=20)
    webhook_retry_base_seconds: float = Field(default=1.0, ge=0, le=60)
    webhook_timeout_seconds: PositiveFloat = 10.0
