"""Route objects, provider kinds and the resilience variables in the settings."""

import json

import pytest

from flaregate.config import KNOWN_VARS, ConfigError, settings_from_vars

PROVIDERS = json.dumps([{"name": "a", "base_url": "http://a/v1"}, {"name": "b", "base_url": "http://b/v1"}])


def test_route_objects_and_the_list_shorthand_side_by_side():
    routes = {"plain": ["a", "b/x"],
              "split": {"strategy": "weighted", "targets": [{"provider": "a", "weight": 3}, "b/y"]},
              "cheap": {"strategy": "cost", "targets": [{"provider": "a", "model": "m", "input_price_per_1m": 0.1,
                                                                "output_price_per_1m": 2}]}}
    settings = settings_from_vars({"FLAREGATE_PROVIDERS": PROVIDERS, "FLAREGATE_ROUTES": json.dumps(routes)})
    assert settings.routes["plain"].strategy == "fallback"
    assert [(t.provider, t.model) for t in settings.routes["plain"]] == [("a", None), ("b", "x")]
    split = settings.routes["split"]
    assert split.strategy == "weighted" and [t.weight for t in split] == [3.0, 1.0]
    assert settings.routes["cheap"][0].output_price_per_1m == 2.0


def test_resilience_variables():
    settings = settings_from_vars({"UPSTREAM_MAX_ATTEMPTS": "2", "UPSTREAM_DEADLINE_SECONDS": "9",
                                   "CIRCUIT_COOLDOWN_SECONDS": "1.5", "HEALTH_PROBE_INTERVAL_SECONDS": "10"})
    policy = settings.resilience
    assert (policy.max_attempts, policy.deadline_seconds, policy.circuit_cooldown_seconds) == (2, 9.0, 1.5)
    assert policy.probe_interval_seconds == 10.0 and policy.first_byte_timeout_seconds is None
    assert {"UPSTREAM_MAX_ATTEMPTS", "CIRCUIT_FAILURE_THRESHOLD", "HEALTH_PROBE_INTERVAL_SECONDS"} <= set(KNOWN_VARS)


def test_provider_kinds_and_default_base_urls():
    providers = [{"name": "c", "kind": "anthropic"}, {"name": "h", "kind": "huggingface"},
                 {"name": "w", "kind": "workers_ai", "account_id": "acct"}]
    settings = settings_from_vars({"FLAREGATE_PROVIDERS": json.dumps(providers)})
    assert [p.kind for p in settings.providers] == ["anthropic", "huggingface", "workers_ai"]


@pytest.mark.parametrize(
    ("vars", "named"),
    [
        ({"FLAREGATE_ROUTES": '{"r": {"strategy": "fastest", "targets": ["a"]}}'}, "strategy"),
        ({"FLAREGATE_ROUTES": '{"r": {"strategy": "weighted", "targets": [{"provider": "a", "weight": 0}]}}'},
         "weight > 0"),
        ({"FLAREGATE_ROUTES": '{"r": [{"provider": "a", "weight": -1}]}'}, "weight"),
        ({"FLAREGATE_ROUTES": '{"r": {"targets": []}}'}, "no targets"),
        ({"FLAREGATE_PROVIDERS": '[{"name": "w", "kind": "workers_ai"}]'}, "account_id"),
        ({"FLAREGATE_PROVIDERS": '[{"name": "x", "kind": "bedrock", "base_url": "http://x"}]'}, "kind"),
        ({"UPSTREAM_MAX_ATTEMPTS": "0"}, "max_attempts"),
        ({"CIRCUIT_COOLDOWN_SECONDS": "-1"}, "circuit_cooldown_seconds"),
        ({"UPSTREAM_DEADLINE_SECONDS": "soon"}, "deadline_seconds"),
    ],
)
def test_nonsense_is_rejected_naming_the_field(vars, named):
    with pytest.raises(ConfigError, match=named):
        settings_from_vars({"FLAREGATE_PROVIDERS": PROVIDERS, **vars})


def test_a_route_target_may_cap_its_concurrent_calls():
    routes = {"capped": {"targets": [{"provider": "mock", "max_in_flight": 3}, "mock"]}}
    settings = settings_from_vars({"FLAREGATE_ROUTES": json.dumps(routes)})
    assert [t.max_in_flight for t in settings.routes["capped"]] == [3, None]
    with pytest.raises(ConfigError, match="max_in_flight"):
        settings_from_vars({"FLAREGATE_ROUTES": json.dumps({"bad": [{"provider": "mock", "max_in_flight": 0}]})})
