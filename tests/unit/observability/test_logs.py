"""Structured logs: JSON lines, the environment's level, secrets redacted, IPs anonymised."""

import io
import json
import logging

import pytest

from flaregate.config import settings_from_vars
from flaregate.observability.logs import JsonFormatter, Redactor, configure_logging


def test_redaction_of_configured_and_recognisable_secrets():
    redact = Redactor(["my-own-secret-value", "short"])
    line = redact('key my-own-secret-value; Authorization: Bearer abc.def; sk-proj-abcdefghij; /ws?token=xyz&x=1 short')
    assert "my-own-secret-value" not in line and "abc.def" not in line and "abcdefghij" not in line
    assert "token=[REDACTED]&x=1" in line
    assert line.endswith("short")  # too short to be a secret worth matching everywhere


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configured_logging_writes_json_at_the_environment_level(restore_root_logger):
    settings = settings_from_vars({"LOG_LEVEL": "warn", "FLAREGATE_API_KEYS": "gw-key-0123456789",
                                   "FLAREGATE_ADMIN_KEY": "admin-key-0123456789"})
    stream = io.StringIO()
    configure_logging(settings, stream)
    log = logging.getLogger("flaregate.test")
    log.info("hidden at warn level")
    try:
        raise ValueError("upstream said: bad key gw-key-0123456789")
    except ValueError:
        log.warning("failed for %s", "admin-key-0123456789", exc_info=True, extra={"fields": {"status": 502}})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "warning" and entry["logger"] == "flaregate.test" and entry["status"] == 502
    assert entry["msg"] == "failed for [REDACTED]"
    assert "gw-key-0123456789" not in lines[0] and "ValueError" in entry["exc"]


def test_formatter_keeps_extra_fields_and_serialises_anything():
    record = logging.LogRecord("x", logging.INFO, "f", 1, "hello %s", ("you",), None)
    record.fields = {"obj": object(), "n": 1}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "hello you" and entry["n"] == 1 and entry["obj"].startswith("<object")
