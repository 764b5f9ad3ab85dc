"""Cache settings: route TTLs beside the existing route shorthand, tiers, the admin key."""

import pytest

from flaregate.cache.controls import cache_status, parse_directives
from flaregate.config import ConfigError, settings_from_vars
from flaregate.errors import GatewayError
from flaregate.http import Headers

PROVIDERS = '[{"name": "up", "base_url": "http://x/v1"}]'


def test_routes_take_an_object_with_a_cache_ttl_and_the_shorthand_still_works():
    settings = settings_from_vars({
        "FLAREGATE_PROVIDERS": PROVIDERS,
        "FLAREGATE_ROUTES": '{"fast": ["up/small", "up"], "one": "up", "obj": {"provider": "up"},'
                            ' "slow": {"targets": ["up/big"], "cache_ttl_seconds": 3600},'
                            ' "fresh": {"targets": "up", "cache_ttl_seconds": 0}}',
    })
    assert [(t.provider, t.model) for t in settings.routes["fast"]] == [("up", "small"), ("up", None)]
    assert settings.routes["one"][0].provider == settings.routes["obj"][0].provider == "up"
    assert [(t.provider, t.model) for t in settings.routes["slow"]] == [("up", "big")]
    assert settings.cache.route_ttl_seconds == {"slow": 3600, "fresh": 0}


def test_cache_tier_variables_and_the_admin_key():
    settings = settings_from_vars({"CACHE_MEMORY_MAX_ENTRIES": "5", "CACHE_MEMORY_MAX_BYTES": "4096",
                                   "CACHE_MEMORY_TTL_SECONDS": "9", "CACHE_MAX_TTL_SECONDS": "600",
                                   "CACHE_MAX_ENTRY_BYTES": "2048", "CACHE_SKIP_LENGTH_FINISH": "false",
                                   "FLAREGATE_ADMIN_KEY": " s3cr3t-adm1n "})
    cache = settings.cache
    assert (cache.memory_max_entries, cache.memory_max_bytes, cache.hot_ttl_seconds) == (5, 4096, 9)
    assert (cache.max_ttl_seconds, cache.max_entry_bytes, cache.skip_length_finish) == (600, 2048, False)
    assert settings.admin_key.get_secret_value() == "s3cr3t-adm1n" and "s3cr3t" not in repr(settings)
    assert settings_from_vars({}).admin_key is None
    assert settings_from_vars({}).cache.skip_length_finish is True


def test_the_three_tiers_lifetimes_default_to_the_seeds_and_are_configurable():
    default = settings_from_vars({}).cache
    assert (default.hot_ttl_seconds, default.warm_ttl_seconds, default.cold_ttl_seconds) == (300, 3600, 86400)
    cache = settings_from_vars({"CACHE_MEMORY_TTL_SECONDS": "9", "CACHE_HOT_TTL_SECONDS": "0",
                                "CACHE_WARM_TTL_SECONDS": "120", "CACHE_COLD_TTL_SECONDS": "7200",
                                "CACHE_HOT_PROMOTE_HITS": "3"}).cache
    assert (cache.hot_ttl_seconds, cache.warm_ttl_seconds, cache.cold_ttl_seconds, cache.hot_promote_hits) \
        == (0, 120, 7200, 3)  # the new name of the hot lifetime wins over the old one


@pytest.mark.parametrize(
    ("vars", "named"),
    [
        ({"FLAREGATE_ROUTES": '{"mock-1": {"targets": ["mock"], "cache_ttl_seconds": -1}}'}, "cache_ttl_seconds"),
        ({"FLAREGATE_ROUTES": '{"mock-1": {"targets": ["mock"], "ttl": 5}}'}, "unknown fields"),
        ({"FLAREGATE_ROUTES": '{"mock-1": {"targets": ["mock"], "cache_ttl_seconds": "soon"}}'}, "route_ttl"),
        ({"CACHE_MEMORY_MAX_BYTES": "-1"}, "memory_max_bytes"),
        ({"CACHE_SKIP_LENGTH_FINISH": "maybe"}, "skip_length_finish"),
        ({"CACHE_MAX_TTL_SECONDS": "0"}, "max_ttl_seconds"),
    ],
)
def test_nonsense_cache_settings_are_rejected_naming_the_field(vars, named):
    with pytest.raises(ConfigError, match=named):
        settings_from_vars(vars)


def test_request_directives():
    parsed = parse_directives(Headers({"Cache-Control": "max-age=0, No-Cache", "x-flaregate-cache-ttl": " 0042 ",
                                       "x-flaregate-cache-namespace": "team:a.b-c_d",
                                       "x-flaregate-cache-debug": "true"}), 30)
    assert (parsed.no_cache, parsed.no_store, parsed.ttl, parsed.namespace, parsed.debug) == (True, False, 30, "team:a.b-c_d", True)
    assert parse_directives(Headers({"cache-control": "no-store"}), 30).no_store
    assert parse_directives(Headers({}), 30) == parse_directives(Headers({"x-flaregate-cache-debug": "0"}), 30)
    with pytest.raises(GatewayError):
        parse_directives(Headers({"x-flaregate-cache-ttl": "000"}), 30)


def test_cache_status_follows_rfc_9211():
    assert cache_status("HIT", tier="warm", ttl=12.7) == "flaregate; hit; ttl=12; detail=warm"
    assert cache_status("MISS", stored=True) == "flaregate; fwd=uri-miss; stored"
    assert cache_status("MISS", collapsed=True) == "flaregate; fwd=uri-miss; collapsed"
    assert cache_status("REFRESH") == "flaregate; fwd=request"
    assert cache_status("BYPASS") == "flaregate; fwd=bypass"
