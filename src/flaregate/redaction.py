"""Redaction: text shown to clients or written to logs is scrubbed of the given secrets and
of anything that looks like a key (``sk-...``, ``fg-...``, ``Bearer ...``)."""

from __future__ import annotations

import re
from collections.abc import Iterable

_TOKENISH = re.compile(
    r"(?i)\b(?:sk|pk|rk|fg|fgw|key|gsk|xai|hf|ghp|gho|whsec|AKIA)[-_][A-Za-z0-9_\-]{12,}"
    r"|\bBearer\s+[A-Za-z0-9._\-~+/=]{8,}"
)
REDACTED = "[redacted]"


def looks_like_secret(text: str) -> bool:
    """True for values shaped like an API key (``sk-...``, ``fg-...``, ``Bearer ...``)."""
    return _TOKENISH.search(text) is not None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secrets and anything shaped like an API key replaced."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, REDACTED)
    return _TOKENISH.sub(REDACTED, text)
