"""What the production environment refuses: placeholder or short secrets, a signing secret
that is the admin key (whoever holds one would then hold both), and a read-only observer
key that is the admin key or the signing secret (it would not be read-only).

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
                               api_keys: Iterable[SecretStr], observer_key: SecretStr | None = None) -> list[str]:
    """The reasons these secrets may not run in ``environment`` (none outside production)."""
    if environment.strip().lower() != PRODUCTION:
        return []
    problems = []
    named = [("FLAREGATE_ADMIN_KEY", admin_key), ("FLAREGATE_SIGNING_SECRET", signing_secret),
             ("FLAREGATE_OBSERVER_KEY", observer_key)]
    named += [(f"FLAREGATE_API_KEYS[{i}]", key) for i, key in enumerate(api_keys)]
    for name, secret in named:
        weakness = _weakness(secret.get_secret_value()) if secret is not None else None
        if weakness:
            problems.append(f"{name} {weakness}")
    if admin_key is not None and (signing_secret is None
                                  or signing_secret.get_secret_value() == admin_key.get_secret_value()):
        problems.append("FLAREGATE_SIGNING_SECRET must be set, and differ from FLAREGATE_ADMIN_KEY")
    if observer_key is not None:
        observer = observer_key.get_secret_value()
        if any(other is not None and other.get_secret_value() == observer for other in (admin_key, signing_secret)):
            problems.append("FLAREGATE_OBSERVER_KEY must differ from FLAREGATE_ADMIN_KEY and FLAREGATE_SIGNING_SECRET")
    return problems
