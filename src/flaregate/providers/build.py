"""A provider adapter for each configured provider (``providers/settings.py``), by its kind."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..ports import AiBinding, UpstreamTransport
from .anthropic import AnthropicProvider
from .base import Provider
from .mock import MockProvider
from .openai_compatible import HuggingFaceProvider, OpenAICompatibleProvider
from .settings import DEFAULT_BASE_URLS, ProviderConfig
from .workers_ai import WorkersAiProvider

if TYPE_CHECKING:
    from ..config import Settings


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
