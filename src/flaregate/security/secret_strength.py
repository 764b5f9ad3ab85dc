"""What the production environment refuses: placeholder or short secrets, and a signing
secret that is the admin key (whoever holds one would then hold both).

Checked once when the settings are built. The standalone server stops with the problems;
a Worker has no start-up step, so it answers every request with 503 ``misconfigured`` (the
problems only in its log) until the secrets are fixed.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import SecretStr

PRODUCTION = "production"
MIN_SECRET_CHARS = 24  # a generated key is 40+; a human-typed word is far below
# Words of sample values in docs and compose files: a secret containing one was never set.
_PLACEHOLDER_WORDS = ("change-me", "changeme", "change_me", "replace-me", "replace_me", "replace_with",
                      "placeholder", "example", "your-key", "your_key", "xxxx", "secret-here", "insecure")


def _weakness(value: str) -> str | None:
    lowered = value.lower()
    if any(word in lowered for word in _PLACEHOLDER_WORDS):
        return "is a placeholder"
    if len(value) < MIN_SECRET_CHARS:
        return f"is shorter than {MIN_SECRET_CHARS} characters"
    return None


def production_secret_problems(environment: str, admin_key: SecretStr | None, signing_secret: SecretStr | None,
                               api_keys: Iterable[SecretStr]) -> list[str]:
    """The reasons these secrets may not run in ``environment`` (none outside production)."""
    if environment.strip().lower() != PRODUCTION:
        return []
    problems = []
    named = [("FLAREGATE_ADMIN_KEY", admin_key), ("FLAREGATE_SIGNING_SECRET", signing_secret)]
    named += [(f"FLAREGATE_API_KEYS[{i}]", key) for i, key in enumerate(api_keys)]
    for name, secret in named:
        weakness = _weakness(secret.get_secret_value()) if secret is not None else None
        if weakness:
            problems.append(f"{name} {weakness}")
    if admin_key is not None and (signing_secret is None
                                  or signing_secret.get_secret_value() == admin_key.get_secret_value()):
        problems.append("FLAREGATE_SIGNING_SECRET must be set, and differ from FLAREGATE_ADMIN_KEY")
    return problems
