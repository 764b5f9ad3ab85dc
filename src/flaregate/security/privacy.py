"""Privacy helpers: client addresses are truncated before they are stored or logged, and
text shown to clients or written to logs is scrubbed of anything that looks like a key."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable

_TOKENISH = re.compile(
    r"(?i)\b(?:sk|pk|rk|fg|fgw|key|gsk|xai|hf|ghp|gho|whsec|AKIA)[-_][A-Za-z0-9_\-]{12,}"
    r"|\bBearer\s+[A-Za-z0-9._\-~+/=]{8,}"
)
REDACTED = "[redacted]"


@functools.lru_cache(maxsize=4096)  # parsing on every request cost ~10% of a cache hit (bench/)
def anonymize_ip(ip: str) -> str:
    """IPv4 to its /24 (``203.0.113.0``), IPv6 to its /48 (``2001:db8:1::``).

    Anything that is not an address (a Unix socket path, garbage from a header) becomes
    ``"unknown"``, so the raw value never travels further.
    """
    try:
        address = ipaddress.ip_address((ip or "").strip().split("%")[0])
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def client_address(ip: str | None, anonymize: bool = True) -> str | None:
    """The form of a client address that may be stored or logged under the settings."""
    if ip is None:
        return None
    return anonymize_ip(ip) if anonymize else ip


def looks_like_secret(text: str) -> bool:
    """True for values shaped like an API key (``sk-...``, ``fg-...``, ``Bearer ...``)."""
    return _TOKENISH.search(text) is not None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secrets and anything shaped like an API key replaced."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, REDACTED)
    return _TOKENISH.sub(REDACTED, text)
