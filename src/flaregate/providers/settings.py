"""Providers as configured (``FLAREGATE_PROVIDERS``, or ``OPENAI_API_KEY``): one entry per
upstream, its kind, endpoint and key; the built-in mock provider when none is configured."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, SecretStr, model_validator

MOCK_PROVIDER = "mock"

# Kinds whose base_url has a sensible default (the provider's public endpoint).
DEFAULT_BASE_URLS = {
    "anthropic": "https://api.anthropic.com/v1",
    "huggingface": "https://router.huggingface.co/v1",
    "workers_ai": "https://api.cloudflare.com/client/v4",
}


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Literal["openai", "mock", "anthropic", "workers_ai", "huggingface"] = "openai"
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_seconds: PositiveFloat | None = None
    account_id: str | None = None  # workers_ai over REST: the Cloudflare account
    fault: str | None = None  # mock only: every call fails this way (see providers/mock.py)

    @model_validator(mode="after")
    def _needs_base_url(self) -> ProviderConfig:
        base_url = self.base_url or DEFAULT_BASE_URLS.get(self.kind, "")
        if self.kind != "mock" and not base_url.startswith(("http://", "https://")):
            raise ValueError(f"provider {self.name!r} needs an http(s) base_url")
        if self.kind == "workers_ai" and not self.account_id:
            raise ValueError(f"provider {self.name!r} (workers_ai) needs an account_id")
        return self
