"""Request signing (HMAC-SHA256) and webhook delivery signatures.

Signed request headers (see ``docs/security.md``)::

    X-Flaregate-Timestamp: <unix seconds, integer>
    X-Flaregate-Nonce:     <16-128 chars of A-Z a-z 0-9 _ ->
    X-Flaregate-Signature: v2=<hex HMAC-SHA256(secret, canonical)>

    canonical = "v2\\n" METHOD "\\n" PATH "\\n" QUERY "\\n" TIMESTAMP "\\n" NONCE "\\n" hex(SHA256(body))

PATH is the decoded request path without the query string. QUERY is the query string in
canonical form (:func:`canonical_query`): its ``name=value`` pairs decoded, sorted by name
(pairs with the same name keep the order they were sent in), each part percent-encoded
again (RFC 3986 unreserved characters only), joined by ``&``; empty without a query. So
any change to a name, a value, or the order of one name's values breaks the signature,
while a proxy's re-encoding or reordering of different names does not. ``v1`` signatures
(which did not cover the query) are refused. The server accepts a timestamp within
``SIGNATURE_MAX_AGE_SECONDS`` of its clock and each nonce once (nonces are kept for twice
that window, so a replay is caught for as long as its timestamp is acceptable).

Webhook deliveries carry ``X-Flaregate-Webhook-Timestamp`` and
``X-Flaregate-Webhook-Signature: v1=<hex HMAC-SHA256(webhook secret, TIMESTAMP "." body)>``;
:func:`verify_webhook` checks them on the receiving side.

``sign_request`` and ``verify_webhook`` are the client-side helpers; nothing here touches
the network, and entropy is drawn only when called.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

TIMESTAMP_HEADER = "x-flaregate-timestamp"
NONCE_HEADER = "x-flaregate-nonce"
SIGNATURE_HEADER = "x-flaregate-signature"
WEBHOOK_TIMESTAMP_HEADER = "x-flaregate-webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "x-flaregate-webhook-signature"
VERSION = "v2"  # v2: the query string is signed too; v1 (path only) is refused
WEBHOOK_VERSION = "v1"

NONCE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
TIMESTAMP_PATTERN = re.compile(r"^[0-9]{1,12}$")
SIGNATURE_PATTERN = re.compile(r"^v2=([0-9a-f]{64})$")


def _path_of(target: str) -> str:
    """The decoded path of a URL or path, without query or fragment."""
    return unquote(urlsplit(target).path or "/")


def canonical_query(query: str) -> str:
    """The signed form of a raw query string (without its ``?``): pairs decoded as a form
    parser decodes them (``+`` is a space, blank values kept), sorted by name with one
    name's values in the order sent, re-encoded with only unreserved characters left as
    they are. ``"b=2&a=x+y&a=1"`` -> ``"a=x%20y&a=1&b=2"``."""
    if not query:
        return ""
    # surrogateescape both ways: bytes that are not UTF-8 come back as they were sent
    pairs = parse_qsl(query, keep_blank_values=True, errors="surrogateescape")
    pairs.sort(key=lambda pair: pair[0])  # stable: one name's values keep their order
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs)


def _encode(part: str) -> str:
    return quote(part, safe="-_.~", errors="surrogateescape")


def request_query(raw: str, parsed: Mapping[str, str]) -> str:
    """The query string a request was sent with: the host's raw one, else (a request made
    in code, with only parsed parameters) those parameters encoded."""
    return raw if raw or not parsed else urlencode(list(parsed.items()))


def canonical_request(method: str, path: str, query: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return "\n".join((VERSION, method.upper(), path, canonical_query(query), timestamp, nonce,
                      hashlib.sha256(body).hexdigest())).encode()


def signature(secret: str, method: str, path: str, query: str, timestamp: str, nonce: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), canonical_request(method, path, query, timestamp, nonce, body), hashlib.sha256)
    return f"{VERSION}={mac.hexdigest()}"


def sign_request(secret: str, method: str, url: str, body: bytes | str = b"", *,
                 timestamp: int | None = None, nonce: str | None = None) -> dict[str, str]:
    """Headers that sign one request; merge them into the request's own headers.

    ``url`` may be a full URL or a path, with its query string: the path and the query are
    signed, so send the request to exactly this URL (any query parameter added, removed
    or changed later is refused). Send ``body`` exactly as signed (the same bytes).
    """
    raw = body.encode() if isinstance(body, str) else body
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_urlsafe(18)
    return {TIMESTAMP_HEADER: ts, NONCE_HEADER: nonce,
            SIGNATURE_HEADER: signature(secret, method, _path_of(url), urlsplit(url).query, ts, nonce, raw)}


class SignatureProblem(ValueError):
    """Why a signature was refused; the message is safe to show the client."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def check_signature(secret: str, method: str, path: str, headers: Mapping[str, str], body: bytes,
                    now: float, max_age: int, query: str = "") -> tuple[str, int]:
    """Verify a signed request's headers; return (nonce, timestamp) for the replay check.
    ``query`` is the raw query string the request came with (without ``?``).

    Raises SignatureProblem. Everything but the nonce's freshness is checked here.
    """
    ts = headers.get(TIMESTAMP_HEADER) or ""
    nonce = headers.get(NONCE_HEADER) or ""
    sig = headers.get(SIGNATURE_HEADER) or ""
    if not (ts or nonce or sig):
        raise SignatureProblem(
            "This route requires a signed request: send X-Flaregate-Timestamp, X-Flaregate-Nonce "
            "and X-Flaregate-Signature (see docs/security.md).", "signature_required")
    if not TIMESTAMP_PATTERN.match(ts):
        raise SignatureProblem("X-Flaregate-Timestamp must be integer Unix seconds.", "invalid_signature")
    if not NONCE_PATTERN.match(nonce):
        raise SignatureProblem("X-Flaregate-Nonce must be 16-128 characters of A-Z, a-z, 0-9, '_' or '-'.",
                               "invalid_signature")
    if sig.startswith("v1="):
        raise SignatureProblem("v1 request signatures (which do not cover the query string) are no longer "
                               "accepted: sign with v2 (docs/security.md).", "invalid_signature")
    if not SIGNATURE_PATTERN.match(sig):
        raise SignatureProblem("X-Flaregate-Signature must be 'v2=' and 64 hex digits.", "invalid_signature")
    if abs(now - int(ts)) > max_age:
        raise SignatureProblem(f"The request timestamp is more than {max_age}s away from the server clock.",
                               "signature_expired")
    expected = signature(secret, method, path, query, ts, nonce, body)
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise SignatureProblem("The request signature does not match.", "invalid_signature")
    return nonce, int(ts)


def sign_webhook(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"{WEBHOOK_VERSION}={mac.hexdigest()}"


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes, *,
                   now: float | None = None, tolerance: int = 300) -> bool:
    """For webhook receivers: is this delivery signed by ``secret`` and recent?"""
    lowered = {k.lower(): v for k, v in headers.items()}
    ts = lowered.get(WEBHOOK_TIMESTAMP_HEADER, "")
    sig = lowered.get(WEBHOOK_SIGNATURE_HEADER, "")
    if not TIMESTAMP_PATTERN.match(ts):
        return False
    if abs((time.time() if now is None else now) - int(ts)) > tolerance:
        return False
    return hmac.compare_digest(sign_webhook(secret, body, int(ts)).encode(), sig.encode())
