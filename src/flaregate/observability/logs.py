"""Structured logs: one JSON object a line, secrets redacted (client IPs come anonymised:
:mod:`flaregate.security.privacy`).

Hosts call :func:`configure_logging` once with the settings (``LOG_LEVEL`` comes from the
environment's vars). Redaction runs on every formatted line, so a secret cannot leak
through an exception message or a logged URL either: configured keys are replaced
wherever they appear, and so are bearer tokens, ``sk-``/``fg-`` style keys and ``token=``
query parameters.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

REDACTED = "[REDACTED]"
_PATTERNS = (
    (re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+"), r"\1 " + REDACTED),
    (re.compile(r"\b(?:sk|fg|pk|rk)-[A-Za-z0-9_\-]{8,}"), REDACTED),
    (re.compile(r"(?i)([?&](?:token|api_key|key|access_token)=)[^&\s\"']+"), r"\1" + REDACTED),
    # A URL's password, however short: ``redis://user:pw@host`` -> ``redis://user:[REDACTED]@host``.
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@\"']*:)[^\s@/\"']+@"), r"\1" + REDACTED + "@"),
)
# Each pattern's literal, tested first with ``in`` (far cheaper than a regex scan, and most
# lines, e.g. every access-log line, contain none of them). Same order as _PATTERNS.
_HINTS: tuple[tuple[str, ...], ...] = (("bearer",), ("sk-", "fg-", "pk-", "rk-"), ("=",), ("://",))
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR}
# Attributes every LogRecord has (listed, not sampled: nothing runs at import time);
# anything else passed through ``extra`` is a field.
_RECORD_ATTRS = frozenset({
    "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module", "exc_info",
    "exc_text", "stack_info", "lineno", "funcName", "created", "msecs", "relativeCreated", "thread",
    "threadName", "processName", "process", "taskName", "message", "asctime", "fields",
})


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        lowered = text.lower()
        for (pattern, replacement), hints in zip(_PATTERNS, _HINTS, strict=True):
            if any(hint in lowered for hint in hints):
                text = pattern.sub(replacement, text)
                lowered = text.lower()
        return text


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redact or Redactor()
        # json.dumps with any option builds an encoder per call; one, kept, does the same.
        self._encode = json.JSONEncoder(default=str, ensure_ascii=False).encode
        self._second: tuple[int, str] = (-1, "")  # the last whole second and its text

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{self._second[1]}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRS and not name.startswith("_"):
                entry.setdefault(name, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._redact(self._encode(entry))


def secrets_of(settings: Any) -> list[str]:
    """Every secret value in the settings, found by type, not by name: each ``SecretStr``
    anywhere in the settings tree (gateway, provider, admin and signing keys, the Datadog
    key, OTLP header values, the Redis URL, and any secret setting added later), plus the
    parts of one that a log line may show alone: a URL's password (``redis://:pw@host``)
    and a header value's credential after its scheme (``Bearer <token>``)."""
    found: list[str] = []
    _collect(settings, found, 0)
    return list(dict.fromkeys(found))


def _collect(value: Any, found: list[str], depth: int) -> None:
    if depth > 8 or value is None or isinstance(value, str | int | float | bool):
        return
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        found.append(secret)
        found.extend(_secret_parts(secret))
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect(getattr(value, name, None), found, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, found, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _collect(item, found, depth + 1)


def _secret_parts(secret: str) -> list[str]:
    parts = []
    if "://" in secret:
        try:
            split = urlsplit(secret)
            parts += [p for p in (split.password, unquote(split.password or "")) if p]
        except ValueError:
            pass
    scheme, _, credential = secret.strip().partition(" ")
    if credential and scheme.isalpha():
        parts.append(credential.strip())
    return parts


def lean_records() -> None:
    """Stop each LogRecord from collecting what the JSON lines never show (the logging
    HOWTO's "Optimization"): the caller's frame (a stack walk per record), thread, process
    and task names. About a quarter of an access-log line's cost on the local host."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined,unused-ignore]


def configure_logging(settings: Any, stream: IO[str] | None = None, extra_secrets: Iterable[str] = (),
                      handler: logging.Handler | None = None) -> None:
    """Route every logger to one JSON handler at the environment's ``LOG_LEVEL`` (a stream
    handler on ``stream`` or stderr unless the host passes its own)."""
    lean_records()
    handler = handler or logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(Redactor([*secrets_of(settings), *extra_secrets])))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(str(getattr(settings, "log_level", "info")).lower(), logging.INFO))
