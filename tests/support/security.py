"""Helpers for tests of the security features: a gateway with a security store, and
signed admin requests."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from flaregate.config import settings_from_vars
from flaregate.gateway import Gateway
from flaregate.hosts.local.runtime import (
    LocalHubClient,
    LocalRateLimiterClient,
    LocalSecurityClient,
)
from flaregate.http import Headers, Request
from flaregate.hub.aggregator import MetricsHub
from flaregate.ports import Ports
from flaregate.ratelimits.limiter import RateLimiter
from flaregate.security.signing import sign_request
from flaregate.security.store import SecurityStore
from tests.support.fakes import (
    FakeClock,
    InlineTasks,
    MemoryKV,
    MemorySql,
    RecordingBroadcaster,
    RecordingScheduler,
)

CONFIG_KEY = "gw-config-key-123456"
ADMIN_KEY = "admin-secret-abcdef-0123456789"
UPSTREAM_KEY = "sk-upstream-abcdefghijklmnop"


class SecureRig:
    """A Gateway over in-memory ports with a security store, and helpers to drive it."""

    def __init__(self, vars: dict[str, str] | None = None, transport: Any = None) -> None:
        self.clock = FakeClock()
        self.sql = MemorySql()
        self.hub_broadcaster = RecordingBroadcaster()
        self.hub = MetricsHub(self.sql, self.clock, self.hub_broadcaster, RecordingScheduler())
        self.tasks = InlineTasks()
        self.store = SecurityStore(self.sql, self.clock)
        self.transport = transport
        providers = json.dumps([{"name": "mock", "kind": "mock"},
                                {"name": "a", "base_url": "http://a.invalid/v1", "api_key_env": "A_API_KEY"},
                                {"name": "b", "base_url": "http://b.invalid/v1"}])
        # ANALYTICS_BATCH_DELAY_MS=0: draining the tasks must not sleep out the batch delay.
        base = {"FLAREGATE_API_KEYS": CONFIG_KEY, "FLAREGATE_ADMIN_KEY": ADMIN_KEY, "A_API_KEY": UPSTREAM_KEY,
                "FLAREGATE_PROVIDERS": providers, "ANALYTICS_BATCH_DELAY_MS": "0",
                "FLAREGATE_ROUTES": json.dumps({"mock-1": ["mock"], "mock-2": ["mock"], "ab": ["a", "b"],
                                                "a": ["a"]})}
        self.settings = settings_from_vars({**base, **(vars or {})})
        self.gateway = self.make_gateway()

    def make_gateway(self) -> Gateway:
        ports = Ports(clock=self.clock, cache=MemoryKV(self.clock), upstream=self.transport, tasks=self.tasks,
                      rate_limiter=LocalRateLimiterClient(RateLimiter(self.sql, self.clock)),
                      metrics_hub=LocalHubClient(self.hub), security=LocalSecurityClient(self.store))
        return Gateway(self.settings, ports)

    def admin(self, method: str, path: str, body: Any = None, *, key: str | None = ADMIN_KEY,
              sign: bool = True, secret: str = ADMIN_KEY, headers: dict[str, str] | None = None) -> Request:
        raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        hs = {"content-type": "application/json"}
        if key:
            hs["authorization"] = f"Bearer {key}"
        if sign:  # the path with its query string, as it is sent: both are signed
            hs.update(sign_request(secret, method, path, raw, timestamp=int(self.clock.now())))
        hs.update(headers or {})
        bare, _, query = path.partition("?")
        return Request(method, bare, Headers(hs), raw, dict(parse_qsl(query, keep_blank_values=True)),
                       client_ip="203.0.113.77", raw_query=query)

    async def call(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        response = await self.gateway.handle(request)
        assert isinstance(response.body, bytes)
        return response.status, json.loads(response.body) if response.body else None, response.headers

    async def create_key(self, **spec: Any) -> dict[str, Any]:
        status, body, _ = await self.call(self.admin("POST", "/admin/keys", spec))
        assert status == 201, body
        return body


def chat_request(key: str | None, model: str = "mock-1", headers: dict[str, str] | None = None,
                 content: str = "hello", path: str = "/v1/chat/completions") -> Request:
    hs = {"content-type": "application/json", **(headers or {})}
    if key:
        hs["authorization"] = f"Bearer {key}"
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}]}).encode()
    return Request("POST", path, Headers(hs), body, client_ip="198.51.100.23")
