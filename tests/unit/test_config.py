import json

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


def _limit(**overrides):
    policy = {"name": "a", "algorithm": "fixed_window", "limit": 5, "window_seconds": 60, **overrides}
    return json.dumps([{k: v for k, v in policy.items() if v is not None}])


def test_rate_limit_policies_budgets_prices_and_the_admin_key():
    settings = settings_from_vars({
        "FLAREGATE_RATE_LIMITS": json.dumps([
            {"name": "rpm", "algorithm": "sliding_window", "limit": 60, "window_seconds": 60, "scope": "key+model"},
            {"name": "tpm", "algorithm": "token_bucket", "unit": "tokens", "limit": 1000, "window_seconds": 60,
             "scope": ["user"], "user_header": "x-user-id", "failure_mode": "closed"},
        ]),
        "FLAREGATE_BUDGETS": '[{"name": "monthly", "period": "month", "limit_usd": 25}]',
        "FLAREGATE_ROUTES": '{"m": [{"provider": "mock", "input_price_per_1m": 0.15, "output_price_per_1m": 0.6}]}',
        "FLAREGATE_ADMIN_KEY": "s3cret",
    })
    rpm, tpm = settings.rate_limits
    assert rpm.scope == ("key", "model") and tpm.failure_mode == "closed"
    assert tpm.wire()["refill_per_second"] == pytest.approx(1000 / 60)  # limit per window_seconds
    assert settings.budgets[0].wire() == {"name": "monthly", "algorithm": "fixed_window", "unit": "usd",
                                          "limit": 25.0, "calendar": "month"}
    assert settings.routes["m"][0].output_price_per_1m == 0.6
    assert settings.admin_key.get_secret_value() == "s3cret" and "s3cret" not in repr(settings)


def test_the_simple_variables_stay_the_default_policy_unless_replaced():
    from flaregate.ratelimits.enforcer import effective_policies

    simple = settings_from_vars({"RATE_LIMIT_CAPACITY": "7", "RATE_LIMIT_PER_HOUR": "5000",
                                 "FLAREGATE_RATE_LIMITS": _limit()})
    default, custom = effective_policies(simple)
    assert (default.name, default.limit, default.refill_per_second) == ("default", 7.0, 5000 / 3600)
    assert custom.name == "a"
    replaced = effective_policies(settings_from_vars({"FLAREGATE_RATE_LIMITS": _limit(name="default")}))
    assert [(p.name, p.algorithm) for p in replaced] == [("default", "fixed_window")]


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
        ({"FLAREGATE_RATE_LIMITS": '{"name": "a"}'}, "FLAREGATE_RATE_LIMITS: must be a JSON list"),
        ({"FLAREGATE_RATE_LIMITS": '[{"name": "a", "algorithm": "leaky", "limit": 1}]'}, "rate_limits.0.algorithm"),
        ({"FLAREGATE_RATE_LIMITS": _limit(limit=0)}, "rate_limits.0.limit"),
        ({"FLAREGATE_RATE_LIMITS": _limit(limit=-3)}, "rate_limits.0.limit"),
        ({"FLAREGATE_RATE_LIMITS": _limit(window_seconds=0)}, "rate_limits.0.window_seconds"),
        ({"FLAREGATE_RATE_LIMITS": _limit(window_seconds=None)}, "needs window_seconds"),
        ({"FLAREGATE_RATE_LIMITS": _limit(algorithm="token_bucket", refill_per_second=1)}, "exactly one of refill_per_second"),
        ({"FLAREGATE_RATE_LIMITS": _limit(unit="bytes")}, "rate_limits.0.unit"),
        ({"FLAREGATE_RATE_LIMITS": _limit(scope="key+planet")}, "rate_limits.0.scope"),
        ({"FLAREGATE_RATE_LIMITS": _limit(scope=[])}, "rate_limits.0.scope"),
        ({"FLAREGATE_RATE_LIMITS": _limit(scope="user")}, "needs user_header"),
        ({"FLAREGATE_RATE_LIMITS": _limit(failure_mode="maybe")}, "rate_limits.0.failure_mode"),
        ({"FLAREGATE_RATE_LIMITS": _limit(name="a|b")}, "rate_limits.0.name"),
        ({"FLAREGATE_RATE_LIMITS": _limit(colour="red")}, "rate_limits.0.colour"),
        ({"FLAREGATE_RATE_LIMITS": f"[{_limit()[1:-1]}, {_limit()[1:-1]}]"}, "'a' is used twice"),
        ({"FLAREGATE_BUDGETS": '[{"name": "b", "period": "week", "limit_usd": 1}]'}, "budgets.0.period"),
        ({"FLAREGATE_BUDGETS": '[{"name": "b", "period": "day", "limit_usd": 0}]'}, "budgets.0.limit_usd"),
        ({"FLAREGATE_ROUTES": '{"m": [{"provider": "mock", "input_price_per_1m": -1}]}'}, "input_price_per_1m"),
    ],
)
def test_nonsense_is_rejected_naming_the_field(vars, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        settings_from_vars(vars)
