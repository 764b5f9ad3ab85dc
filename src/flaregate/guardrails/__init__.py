"""Guardrails in front of providers: PII detection (redact or block), deny-lists, a max_tokens cap."""

from .checks import Guardrails
from .policy import GuardrailPolicy, GuardrailSettings

__all__ = ["GuardrailPolicy", "GuardrailSettings", "Guardrails"]
