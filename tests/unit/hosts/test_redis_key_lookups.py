"""Over Redis, stored-key lookups are uncached per process unless the operator set
KEY_CACHE_SECONDS (then that staleness is their choice)."""

from flaregate.config import settings_from_vars
from flaregate.hosts.local.redis_backend import uncached_key_lookups


def test_lookups_are_uncached_by_default_and_an_explicit_cache_is_kept():
    assert settings_from_vars({}).security.key_cache_seconds == 30.0
    assert uncached_key_lookups(settings_from_vars({})).security.key_cache_seconds == 0.0
    chosen = uncached_key_lookups(settings_from_vars({"KEY_CACHE_SECONDS": "5"}))
    assert chosen.security.key_cache_seconds == 5.0
