import pytest

from flaregate.config import ConfigError, settings_from_vars


def test_embedded_defaults_use_the_mock_provider():
    settings = settings_from_vars({})
    assert [p.kind for p in settings.providers] == ["mock"]
    assert "mock-1" in settings.routes
    assert settings.api_keys == ()


def test_provider_key_from_a_secret_and_route_shorthand():
    settings = settings_from_vars({
        "FLAREGATE_PROVIDERS": '[{"name": "up", "base_url": "http://x/v1", "api_key_env": "UP_API_KEY"}]',
        "UP_API_KEY": "sk-secret",
        "FLAREGATE_ROUTES": '{"fast": ["up/small", "up"]}',
        "FLAREGATE_API_KEYS": " a , b ,",
    })
    assert settings.providers[0].api_key.get_secret_value() == "sk-secret"
    assert [(t.provider, t.model) for t in settings.routes["fast"]] == [("up", "small"), ("up", None)]
    assert [k.get_secret_value() for k in settings.api_keys] == ["a", "b"]
    assert "sk-secret" not in repr(settings)


def test_openai_key_alone_routes_every_model_to_openai():
    settings = settings_from_vars({"OPENAI_API_KEY": "sk-1"})
    assert settings.routes["*"][0].provider == "openai"


@pytest.mark.parametrize(
    ("vars", "named"),
    [
        ({"RATE_LIMIT_CAPACITY": "0"}, "rate_limit.capacity"),
        ({"RATE_LIMIT_REFILL_PER_SECOND": "-1"}, "rate_limit.refill_per_second"),
        ({"RATE_LIMIT_PER_HOUR": "lots"}, "RATE_LIMIT_PER_HOUR"),
        ({"CACHE_TTL_SECONDS": "-5"}, "cache_ttl_seconds"),
        ({"FLAREGATE_ROUTES": "{bad"}, "FLAREGATE_ROUTES"),
        ({"FLAREGATE_ROUTES": '{"a": ["ghost"]}'}, "unknown provider 'ghost'"),
        ({"FLAREGATE_PROVIDERS": '[{"name": "x", "kind": "openai"}]'}, "base_url"),
        ({"LOG_LEVEL": "loud"}, "log_level"),
    ],
)
def test_nonsense_is_rejected_naming_the_field(vars, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        settings_from_vars(vars)
