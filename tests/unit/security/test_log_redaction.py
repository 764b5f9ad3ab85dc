"""Every configured secret is taken out of every log line: the signing secret, the Datadog
key, OTLP header values, the Redis URL (and its password alone) as well as gateway,
provider and admin keys; found by type (every SecretStr of the settings), so a secret
setting added later is covered without a list to keep up to date."""

from __future__ import annotations

import io
import json
import logging

import pytest
from pydantic import BaseModel, SecretStr

from flaregate.config import settings_from_vars
from flaregate.observability.logs import configure_logging, secrets_of
from flaregate.observability.request_bodies import log_secrets

PROVIDER_KEY = "prov-key-0000-aaaaaaaaaaaa"
SECRETS = {
    "FLAREGATE_API_KEYS": "gw-config-key-1111-bbbbbbbb",
    "FLAREGATE_ADMIN_KEY": "admin-key-2222-cccccccccccc",
    "FLAREGATE_SIGNING_SECRET": "signing-secret-3333-dddddddd",
    "DD_API_KEY": "0123456789abcdef0123456789abcdef",
    "OTEL_EXPORTER_OTLP_HEADERS": "x-honeycomb-team=hcteam4444eeeeeeee,authorization=Basic%20dXNlcjpvdGxwLXBhc3M%3D",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "api-key=traces-key-5555-ffffffff",
    "FLAREGATE_REDIS_URL": "redis://default:r3dis-pa55word@redis.example.net:6379/0",
}
# What a log line may show of them: whole values, and the parts of some on their own.
LEAKS = [*SECRETS.values(), PROVIDER_KEY, "hcteam4444eeeeeeee", "Basic dXNlcjpvdGxwLXBhc3M=",
         "dXNlcjpvdGxwLXBhc3M=", "traces-key-5555-ffffffff", "r3dis-pa55word"]
LEAKS.remove(SECRETS["OTEL_EXPORTER_OTLP_HEADERS"])  # the raw variable never reaches a log; its values do
LEAKS.remove(SECRETS["OTEL_EXPORTER_OTLP_TRACES_HEADERS"])


def settings():
    providers = json.dumps([{"name": "p", "base_url": "https://api.example.com/v1", "api_key_env": "P_API_KEY"}])
    return settings_from_vars({**SECRETS, "P_API_KEY": PROVIDER_KEY, "FLAREGATE_PROVIDERS": providers,
                               "FLAREGATE_ROUTES": json.dumps({"m": ["p"]}), "LOG_LEVEL": "debug"})


@pytest.fixture
def log_stream():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(settings(), stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_log_line_carrying_each_configured_secret_is_redacted(log_stream):
    log = logging.getLogger("flaregate.test")
    for secret in LEAKS:
        log.warning("upstream said %s (and %r)", secret, {"value": secret}, extra={"fields": {"echo": secret}})
    try:
        raise RuntimeError("connect failed: " + " ".join(LEAKS))
    except RuntimeError:
        log.exception("with a traceback")
    text = log_stream.getvalue()
    assert text.count("\n") == len(LEAKS) + 1
    for secret in LEAKS:
        assert secret not in text, f"{secret!r} reached the log"
    assert "[REDACTED]" in text and "upstream said" in text


def test_a_url_password_is_redacted_however_short(log_stream):
    logging.getLogger("flaregate.test").warning("lost redis://:pw@10.0.0.5:6379/0 and rediss://u:x9@h/1")
    text = log_stream.getvalue()
    assert ":pw@" not in text and ":x9@" not in text and "10.0.0.5:6379" in text


def test_every_secret_setting_is_given_to_the_redactor_and_to_the_request_log():
    found = set(secrets_of(settings()))
    assert set(LEAKS) <= found
    assert set(LEAKS) <= set(log_secrets(settings()))

    def every_secret(value, out):  # an independent walk: any SecretStr anywhere
        if isinstance(value, SecretStr):
            out.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                every_secret(getattr(value, name), out)
        elif isinstance(value, dict):
            for item in value.values():
                every_secret(item, out)
        elif isinstance(value, list | tuple):
            for item in value:
                every_secret(item, out)
        return out

    assert set(every_secret(settings(), [])) <= found
