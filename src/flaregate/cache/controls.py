"""Per-request cache controls (request headers) and the cache status headers of a response.

Request headers (documented in docs/cache.md):
  ``Cache-Control: no-store``          BYPASS: neither read nor write the cache
  ``Cache-Control: no-cache``          REFRESH: skip the read, call upstream, store the answer
  ``x-flaregate-cache-ttl: N``         store this answer for N seconds (clamped to the maximum)
  ``x-flaregate-cache-namespace: ns``  a separate key space (purgeable as a whole)
  ``x-flaregate-cache-debug: 1``       answer with ``x-flaregate-cache-key: <key hash>``

Response headers: ``x-flaregate-cache`` (HIT, MISS, BYPASS, REFRESH) and the standard
``Cache-Status`` (RFC 9211) with the cache named ``flaregate``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import GatewayError, bad_request
from ..http import Headers
from .namespaces import NAMESPACE_PATTERN

TTL_HEADER = "x-flaregate-cache-ttl"
NAMESPACE_HEADER = "x-flaregate-cache-namespace"
DEBUG_HEADER = "x-flaregate-cache-debug"
KEY_HEADER = "x-flaregate-cache-key"
STATUS_HEADER = "x-flaregate-cache"
CACHE_NAME = "flaregate"

HIT, MISS, BYPASS, REFRESH = "HIT", "MISS", "BYPASS", "REFRESH"


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    no_store: bool = False
    no_cache: bool = False
    ttl: int | None = None
    namespace: str | None = None
    debug: bool = False


def _invalid(header: str, why: str) -> GatewayError:
    return bad_request(f"Invalid value for header '{header}': {why}.", param=header, code="invalid_cache_header")


def parse_directives(headers: Headers, max_ttl: int) -> CacheDirectives:
    """Read the request's cache headers; a malformed value is a 400 naming the header."""
    directives = {d.strip().split("=", 1)[0].strip().lower()
                  for d in (headers.get("cache-control") or "").split(",")}
    ttl = None
    raw_ttl = headers.get(TTL_HEADER)
    if raw_ttl is not None:
        raw_ttl = raw_ttl.strip()
        digits = raw_ttl.lstrip("0")
        if not (raw_ttl.isascii() and raw_ttl.isdigit()) or not digits:
            raise _invalid(TTL_HEADER, "expected a whole number of seconds, at least 1")
        ttl = max_ttl if len(digits) > 12 else min(int(digits), max_ttl)
    namespace = headers.get(NAMESPACE_HEADER)
    if namespace is not None:
        namespace = namespace.strip()
        if not NAMESPACE_PATTERN.match(namespace):
            raise _invalid(NAMESPACE_HEADER, "use 1 to 64 of A-Z a-z 0-9 _ . : -")
    debug = (headers.get(DEBUG_HEADER) or "").strip().lower() in ("1", "true", "yes", "on")
    return CacheDirectives("no-store" in directives, "no-cache" in directives, ttl, namespace, debug)


def cache_status(status: str, *, tier: str | None = None, ttl: float | None = None, stored: bool = False,
                 collapsed: bool = False) -> str:
    """The RFC 9211 ``Cache-Status`` member for this response."""
    if status == HIT:
        parts = [CACHE_NAME, "hit"]
        if ttl is not None:
            parts.append(f"ttl={max(0, int(ttl))}")
        if tier:
            parts.append(f"detail={tier}")
    else:
        fwd = {MISS: "uri-miss", REFRESH: "request", BYPASS: "bypass"}[status]
        parts = [CACHE_NAME, f"fwd={fwd}"]
        if collapsed:
            parts.append("collapsed")
        if stored:
            parts.append("stored")
    return "; ".join(parts)
