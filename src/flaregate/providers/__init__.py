"""Provider adapters, one module each, all the same shape (see :class:`base.Provider`)."""

from __future__ import annotations

from ..config import DEFAULT_BASE_URLS, ProviderConfig, Settings
from ..ports import UpstreamTransport
from .base import Provider
from .mock import MockProvider
from .openai_compatible import HuggingFaceProvider, OpenAICompatibleProvider


def build_provider(config: ProviderConfig, transport: UpstreamTransport, default_timeout: float) -> Provider:
    if config.kind == "mock":
        return MockProvider(config.name, config.fault)
    base_url = config.base_url or DEFAULT_BASE_URLS.get(config.kind, "")
    api_key = config.api_key.get_secret_value() if config.api_key else None
    timeout = config.timeout_seconds or default_timeout
    if config.kind == "huggingface":
        return HuggingFaceProvider(config.name, base_url, api_key, transport, timeout)
    return OpenAICompatibleProvider(
        name=config.name,
        base_url=base_url,
        api_key=api_key,
        transport=transport,
        timeout=timeout,
    )


def build_providers(settings: Settings, transport: UpstreamTransport) -> dict[str, Provider]:
    return {
        p.name: build_provider(p, transport, settings.upstream_timeout_seconds)
        for p in settings.providers
    }


__all__ = ["Provider", "MockProvider", "OpenAICompatibleProvider", "HuggingFaceProvider", "build_providers"]
