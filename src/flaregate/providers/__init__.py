"""Provider adapters, one module each, all the same shape (see :class:`base.Provider`)."""

from __future__ import annotations

from ..config import DEFAULT_BASE_URLS, ProviderConfig, Settings
from ..ports import AiBinding, UpstreamTransport
from .anthropic import AnthropicProvider
from .base import Provider
from .mock import MockProvider
from .openai_compatible import HuggingFaceProvider, OpenAICompatibleProvider
from .workers_ai import WorkersAiProvider


def build_provider(config: ProviderConfig, transport: UpstreamTransport, default_timeout: float,
                   ai: AiBinding | None = None) -> Provider:
    if config.kind == "mock":
        return MockProvider(config.name, config.fault)
    base_url = config.base_url or DEFAULT_BASE_URLS.get(config.kind, "")
    api_key = config.api_key.get_secret_value() if config.api_key else None
    timeout = config.timeout_seconds or default_timeout
    if config.kind == "huggingface":
        return HuggingFaceProvider(config.name, base_url, api_key, transport, timeout)
    if config.kind == "anthropic":
        return AnthropicProvider(config.name, base_url, api_key, transport, timeout)
    if config.kind == "workers_ai":
        # The binding when the host has one (the edge), else the REST endpoint.
        return WorkersAiProvider(config.name, base_url, config.account_id, api_key, transport, timeout, ai)
    return OpenAICompatibleProvider(
        name=config.name,
        base_url=base_url,
        api_key=api_key,
        transport=transport,
        timeout=timeout,
    )


def build_providers(settings: Settings, transport: UpstreamTransport,
                    ai: AiBinding | None = None) -> dict[str, Provider]:
    return {
        p.name: build_provider(p, transport, settings.upstream_timeout_seconds, ai)
        for p in settings.providers
    }


__all__ = ["Provider", "MockProvider", "OpenAICompatibleProvider", "HuggingFaceProvider", "AnthropicProvider",
           "WorkersAiProvider", "build_providers"]
