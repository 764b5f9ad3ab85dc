"""Guardrail settings (``FLAREGATE_GUARDRAILS``): named policies, chosen per route or per key.

``{"policies": {"strict": {"pii": ["email", "card"], "action": "redact", "deny_words": ["secret
project"], "deny_patterns": ["(?i)drop\\s+table"], "max_tokens": 1024, "output": true}},
"routes": {"gpt-4o": "strict"}, "keys": {"<key id or name>": "strict"}, "default": null}``.
A key's policy wins over its route's. Everything is validated at start, naming the field.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

from .pii import KINDS


class GuardrailPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pii: tuple[StrictStr, ...] = ()  # kinds from pii.KINDS, or ["all"]
    action: Literal["redact", "block"] = "redact"
    deny_words: tuple[StrictStr, ...] = Field(default=(), max_length=1000)  # whole words, any case: block
    deny_patterns: tuple[StrictStr, ...] = Field(default=(), max_length=100)  # regexes: block
    max_tokens: int | None = Field(default=None, gt=0)
    input: bool = True  # PII checks on the request (deny-lists and max_tokens always apply)
    output: bool = True  # also check the provider's answer (non-streamed: whole; streamed: per event)

    @field_validator("pii")
    @classmethod
    def _known_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        if "all" in kinds:
            return KINDS
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown PII kinds {unknown}; use {list(KINDS)} or ['all']")
        return kinds

    @field_validator("deny_patterns")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"deny pattern {pattern[:60]!r} does not compile: {exc}") from None
        return patterns


class GuardrailSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policies: dict[StrictStr, GuardrailPolicy] = {}
    routes: dict[StrictStr, StrictStr] = {}  # route alias -> policy name
    keys: dict[StrictStr, StrictStr] = {}  # key id or key name -> policy name
    default: StrictStr | None = None

    @model_validator(mode="after")
    def _named_policies_exist(self) -> GuardrailSettings:
        for field, names in (("routes", self.routes), ("keys", self.keys),
                             ("default", {"default": self.default} if self.default else {})):
            for where, name in names.items():
                if name not in self.policies:
                    raise ValueError(f"guardrails.{field}.{where}: unknown policy {name!r}")
        return self
