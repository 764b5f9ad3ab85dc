"""Error classes: every failed request falls in exactly one, named after who caused it."""

from __future__ import annotations

from typing import Any

# Client-side: the request was wrong or not allowed; the gateway worked as designed.
CLIENT_SIDE = ("bad_request", "auth", "rate_limited", "upstream_rejected")
# Server-side: the gateway or a provider failed; these count against the health score.
SERVER_SIDE = ("upstream_rate_limited", "upstream_timeout", "upstream_unreachable",
               "upstream_error", "stream_error", "internal")
ERROR_CLASSES = CLIENT_SIDE + SERVER_SIDE

_BY_CODE = {
    "rate_limit_exceeded": "rate_limited",
    "budget_exceeded": "rate_limited",
    "rate_limiter_unavailable": "internal",
    "upstream_rate_limited": "upstream_rate_limited",
    "upstream_timeout": "upstream_timeout",
    "upstream_unreachable": "upstream_unreachable",
    "upstream_error": "upstream_error",
    "upstream_malformed_response": "upstream_error",
    "upstream_rejected": "upstream_rejected",
    "internal_error": "internal",
}


def classify(event: dict[str, Any]) -> str | None:
    """The error class of a finished request event, or None when it succeeded."""
    raw_status = event.get("status")
    status: int = raw_status if isinstance(raw_status, int) else 0
    # A client that leaves mid-stream ("aborted") is not a failure, nor is a cached replay.
    if event.get("stream_outcome") not in (None, "complete", "replayed", "aborted") or (status == 200 and event.get("error")):
        return "stream_error"
    if status < 400:
        return None
    code = event.get("error_code")
    if isinstance(code, str) and code in _BY_CODE:
        return _BY_CODE[code]
    upstream = event.get("upstream_status")
    if isinstance(upstream, int) and upstream >= 400:  # a provider's error relayed as is
        if upstream == 429:
            return "upstream_rate_limited"
        return "upstream_error" if upstream >= 500 else "upstream_rejected"
    if status == 401 or status == 403:
        return "auth"
    if status == 429:
        return "rate_limited"
    if status == 504:
        return "upstream_timeout"
    if status >= 500:
        return "internal" if status == 500 else "upstream_error"
    return "bad_request"
