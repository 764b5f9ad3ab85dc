"""Production refuses the secrets that would hand out admin: placeholders, short values, and a
signing secret that is the admin key."""

import pytest

from flaregate.config import ConfigError, InsecureConfigError, settings_from_vars

STRONG_ADMIN = "fga-" + "a1" * 20
STRONG_SIGNING = "sig-" + "b2" * 20
STRONG_KEY = "fg-" + "c3" * 20


def production(**vars):
    return settings_from_vars({"ENVIRONMENT": "production", **vars})


def test_strong_distinct_secrets_run_in_production():
    settings = production(FLAREGATE_ADMIN_KEY=STRONG_ADMIN, FLAREGATE_SIGNING_SECRET=STRONG_SIGNING,
                          FLAREGATE_API_KEYS=STRONG_KEY)
    assert settings.environment == "production"


@pytest.mark.parametrize(("vars", "named"), [
    ({"FLAREGATE_ADMIN_KEY": "fga-change-me", "FLAREGATE_SIGNING_SECRET": STRONG_SIGNING}, "FLAREGATE_ADMIN_KEY"),
    ({"FLAREGATE_ADMIN_KEY": STRONG_ADMIN, "FLAREGATE_SIGNING_SECRET": "short"}, "FLAREGATE_SIGNING_SECRET"),
    ({"FLAREGATE_ADMIN_KEY": STRONG_ADMIN, "FLAREGATE_SIGNING_SECRET": STRONG_SIGNING,
      "FLAREGATE_API_KEYS": f"{STRONG_KEY},fg-change-me"}, "FLAREGATE_API_KEYS[1]"),
    ({"FLAREGATE_ADMIN_KEY": STRONG_ADMIN}, "FLAREGATE_SIGNING_SECRET must be set"),
    ({"FLAREGATE_ADMIN_KEY": STRONG_ADMIN, "FLAREGATE_SIGNING_SECRET": STRONG_ADMIN}, "differ from"),
    ({"FLAREGATE_ADMIN_KEY": "REPLACE_WITH_A_LONG_RANDOM_ADMIN_KEY", "FLAREGATE_SIGNING_SECRET": STRONG_SIGNING},
     "placeholder"),
])
def test_weak_secrets_are_refused_naming_the_variable(vars, named):
    with pytest.raises(InsecureConfigError) as info:
        production(**vars)
    assert named in str(info.value)
    assert isinstance(info.value, ConfigError)
    for value in vars.values():  # the message names variables, never their values
        for part in value.split(","):
            assert len(part) < 8 or part not in str(info.value)


def test_other_environments_keep_their_development_secrets():
    settings = settings_from_vars({"ENVIRONMENT": "staging", "FLAREGATE_ADMIN_KEY": "fga-change-me"})
    assert settings.admin_key is not None
