"""Tags: a small, bounded dict of strings per request, for analytics, logs and webhooks.

A request sends them as ``x-flaregate-metadata: {"feature": "search", "team": "core"}``
(a JSON object); a stored key may carry default tags, which the request's own override
key by key. Bounds keep analytics dimensions and log records small: at most ``MAX_TAGS``
keys, names of letters, digits and ``_.-`` (1-64), string values up to 128 characters
without control characters. Anything else is a 400 ``invalid_metadata``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, StrictStr

from ..errors import GatewayError, bad_request

METADATA_HEADER = "x-flaregate-metadata"
MAX_TAGS = 8
MAX_VALUE_CHARS = 128
_MAX_HEADER_CHARS = 2048
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _invalid(message: str) -> Exception:
    return bad_request(f"Invalid {METADATA_HEADER}: {message}", param=METADATA_HEADER, code="invalid_metadata")


def check_tags(tags: Any, where: str = "metadata") -> dict[str, str]:
    """``tags`` if it is a bounded dict of strings, else a 400 naming the problem."""
    if not isinstance(tags, dict):
        raise _invalid(f"{where} must be a JSON object of strings.")
    if len(tags) > MAX_TAGS:
        raise _invalid(f"{where} has {len(tags)} keys (at most {MAX_TAGS}).")
    for name, value in tags.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise _invalid(f"key {str(name)[:64]!r} must be 1-64 letters, digits, '_', '.' or '-'.")
        if not isinstance(value, str):
            raise _invalid(f"value of {name!r} must be a string.")
        if len(value) > MAX_VALUE_CHARS or _CONTROL.search(value):
            raise _invalid(f"value of {name!r} must be at most {MAX_VALUE_CHARS} characters, "
                           "without control characters.")
    return tags


def parse_tags(header: str | None) -> dict[str, str]:
    if header is None or not header.strip():
        return {}
    if len(header) > _MAX_HEADER_CHARS:
        raise _invalid(f"the header is longer than {_MAX_HEADER_CHARS} characters.")
    try:
        value = json.loads(header)
    except ValueError:
        raise _invalid("the header is not JSON.") from None
    return check_tags(value)


def request_tags(headers: Mapping[str, str], defaults: Mapping[str, str] | None) -> dict[str, str]:
    """The request's own tags under the key's defaults, still at most MAX_TAGS: a key's tag
    wins over the client's (routing branches may read client tags; a tag the operator set on
    the key is never the client's to change)."""
    own = parse_tags(headers.get(METADATA_HEADER))
    if not defaults:
        return own
    merged = {**own, **defaults}
    if len(merged) > MAX_TAGS:
        raise _invalid(f"with the key's default tags there are {len(merged)} keys (at most {MAX_TAGS}).")
    return merged


def _policy_tags(tags: dict[str, str] | None) -> dict[str, str] | None:
    if tags is None:
        return None
    try:
        return check_tags(tags, "tags")
    except GatewayError as exc:
        raise ValueError(exc.message) from None


# A key's or a team's default request tags, under the same bounds as a request's.
PolicyTags = Annotated[dict[StrictStr, StrictStr] | None, AfterValidator(_policy_tags)]
