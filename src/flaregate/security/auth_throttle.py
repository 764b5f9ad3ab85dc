"""A per-network throttle on failed authentication (``AUTH_FAILURE_LIMIT`` failures per
``AUTH_FAILURE_WINDOW_SECONDS``, 20 per 10 s by default; 0 turns it off).

Every bogus token costs something: a key-store lookup (a Durable Object call on the edge)
when it is shaped like a stored key, and a request-log record. A network (IPv4 /24, IPv6
/48: :func:`flaregate.security.privacy.anonymize_ip` of ``Request.client_ip``, the socket
peer locally, ``cf-connecting-ip`` on the edge) whose failures reach the limit within one
window gets **429 ``too_many_auth_failures``** with ``Retry-After`` until that window ends,
before any lookup. The window starts at the network's first failure; a refused request is
not a failure (it neither extends the window nor costs anything), so the throttle allows at
most ``limit`` costly failures per window per network.

While a network is throttled a request from it still gets in when its credential can be
checked for free: a configured gateway key (in memory), a stored key already in this
process's positive key cache, the admin key or the observer key (in memory). So a tenant
behind the same NAT as an attacker keeps working with a key this process has seen; only a
stored key not yet cached here waits for the window (``security/access.py``,
``security/admin.py``, ``security/gate.py`` apply this rule).

The state is in memory, per process locally and per isolate on the edge (no extra Durable
Object call per request; each isolate throttles on its own): an LRU of at most
``MAX_NETWORKS`` networks (a few hundred bytes each: about 1 MB at most), the least
recently failing evicted first. A request with no client address (in-process callers) is
never throttled.

One throttle serves one gateway. Its parts that see only the settings (``require_admin``
and the observer check, called with ``settings`` by every admin module) find it with
:func:`throttle_for`, keyed by that settings object; the gateway's access control gets the
same one (``AdminApi`` hands it over, being the security object given both).
"""

from __future__ import annotations

import math
import time
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..errors import GatewayError
from ..http import Request
from ..ports import Clock
from .privacy import anonymize_ip

if TYPE_CHECKING:
    from ..config import Settings

MAX_NETWORKS = 4096
CODE = "too_many_auth_failures"


class _Monotonic:
    """The clock of a throttle made where no clock is at hand (``require_admin`` in tests)."""

    @staticmethod
    def now() -> float:
        return time.time()

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()


class AuthFailureThrottle:
    def __init__(self, limit: int = 20, window_seconds: float = 10.0, clock: Clock | None = None,
                 max_networks: int = MAX_NETWORKS) -> None:
        self.limit = limit
        self.window = window_seconds
        self.clock: Clock = clock if clock is not None else _Monotonic()
        self.max_networks = max_networks
        self._networks: OrderedDict[str, list[float]] = OrderedDict()  # network -> [window start, failures]

    def __len__(self) -> int:
        return len(self._networks)

    @staticmethod
    def network(request: Request) -> str | None:
        if not request.client_ip:
            return None
        network = anonymize_ip(request.client_ip)
        return None if network == "unknown" else network

    def retry_after(self, request: Request) -> int | None:
        """Seconds until this request's network may fail again, or None when it is not throttled."""
        if self.limit <= 0:
            return None
        network = self.network(request)
        entry = self._networks.get(network) if network is not None else None
        if entry is None:
            return None
        left = entry[0] + self.window - self.clock.monotonic()
        if left <= 0:
            del self._networks[network]  # type: ignore[arg-type]
            return None
        return max(1, math.ceil(left)) if entry[1] >= self.limit else None

    def failed(self, request: Request) -> None:
        """Count one failed authentication against the request's network."""
        if self.limit <= 0:
            return
        network = self.network(request)
        if network is None:
            return
        now = self.clock.monotonic()
        entry = self._networks.get(network)
        if entry is None or now - entry[0] >= self.window:
            self._networks[network] = [now, 1.0]
        else:
            entry[1] += 1
        self._networks.move_to_end(network)
        while len(self._networks) > self.max_networks:
            self._networks.popitem(last=False)

    def check(self, request: Request) -> None:
        """Raise the 429 when the request's network is throttled."""
        seconds = self.retry_after(request)
        if seconds is not None:
            raise refusal(seconds)

    def refuse_or_count(self, request: Request, error: GatewayError) -> GatewayError:
        """The error to raise for a failed authentication: the 429 while throttled (not
        counted), else ``error`` (counted)."""
        seconds = self.retry_after(request)
        if seconds is not None:
            return refusal(seconds)
        self.failed(request)
        return error


def refusal(seconds: int) -> GatewayError:
    return GatewayError(429, f"Too many failed authentications from your network; retry after {seconds} s.",
                        type="rate_limit_error", code=CODE, headers={"retry-after": str(seconds)})


_THROTTLES: dict[int, AuthFailureThrottle] = {}


def throttle_for(settings: Settings, clock: Clock | None = None) -> AuthFailureThrottle:
    """The throttle of the gateway built from ``settings`` (this very object), made at the
    first call (the gateway's security gate, with the gateway's clock) and dropped with it."""
    key = id(settings)
    throttle = _THROTTLES.get(key)
    if throttle is None:
        security = settings.security
        throttle = AuthFailureThrottle(security.auth_failure_limit, security.auth_failure_window_seconds, clock)
        _THROTTLES[key] = throttle
        weakref.finalize(settings, _THROTTLES.pop, key, None)
    elif clock is not None and isinstance(throttle.clock, _Monotonic):
        throttle.clock = clock
    return throttle
