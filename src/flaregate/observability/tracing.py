"""Request ids and W3C trace context: accepted when well formed, minted otherwise.

The gateway is one span of the caller's trace: it keeps the incoming trace id (or starts
a trace), mints its own span id, sends that ``traceparent`` upstream and returns it.
"""

from __future__ import annotations

import re
import secrets

from ..redaction import looks_like_secret

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def request_id(incoming: str | None) -> str:
    # A key pasted into the id would be echoed and forwarded upstream: mint one instead.
    if incoming and _REQUEST_ID.match(incoming) and not looks_like_secret(incoming):
        return incoming
    return "req_" + secrets.token_hex(12)


def trace_id(traceparent: str) -> str | None:
    match = _TRACEPARENT.match(traceparent or "")
    return match.group(1) if match else None


def span_id(traceparent: str | None) -> str | None:
    """The parent id of a well-formed ``traceparent`` (the caller's span, or ours)."""
    match = _TRACEPARENT.match(traceparent or "")
    return match.group(2) if match and match.group(2) != "0" * 16 else None


def child_traceparent(incoming: str | None) -> str:
    """A traceparent for the upstream call: same trace, new span (a new trace if none)."""
    match = _TRACEPARENT.match(incoming or "")
    trace_id = match.group(1) if match and match.group(1) != "0" * 32 else secrets.token_hex(16)
    flags = match.group(3) if match else "01"
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"
