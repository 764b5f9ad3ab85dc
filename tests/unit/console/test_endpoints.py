"""Profiler, tracing and the operator endpoints through the core with in-memory ports."""

import json
import re
from pathlib import Path

import pytest

import flaregate.console
from flaregate.config import settings_from_vars
from flaregate.errors import GatewayError
from flaregate.gateway import Gateway
from flaregate.hosts.local.runtime import LocalHubClient, LocalRateLimiterClient
from flaregate.http import Headers, Request
from flaregate.hub.aggregator import MetricsHub
from flaregate.ports import Ports
from flaregate.ratelimits.limiter import RateLimiter
from tests.support.fakes import (
    FakeClock,
    InlineTasks,
    MemoryKV,
    MemorySql,
    RecordingBroadcaster,
    RecordingScheduler,
)
from tests.unit.test_gateway import KEY, ScriptedTransport, chat, collect, ok_completion

ADMIN = "admin-key-for-tests-0123"


class FlakySql(MemorySql):
    """Real SQL whose hub tables can be made to fail, as a broken hub storage would."""

    fail = False

    def exec(self, sql, *params):
        if self.fail and "hub_" in sql:
            raise OSError("disk I/O error")
        return super().exec(sql, *params)


def build(transport=None, admin=ADMIN, **vars):
    clock, sql, tasks = FakeClock(), FlakySql(), InlineTasks()
    hub = MetricsHub(sql, clock, RecordingBroadcaster(), RecordingScheduler())
    ports = Ports(clock=clock, cache=MemoryKV(clock), upstream=transport or ScriptedTransport(), tasks=tasks,
                  rate_limiter=LocalRateLimiterClient(RateLimiter(sql, clock)), metrics_hub=LocalHubClient(hub))
    providers = json.dumps([{"name": "mock", "kind": "mock"}, {"name": "a", "base_url": "http://a.invalid/v1"},
                            {"name": "b", "base_url": "http://b.invalid/v1"}])
    base = {"FLAREGATE_API_KEYS": KEY, "FLAREGATE_PROVIDERS": providers, "ANALYTICS_BATCH_DELAY_MS": "0",
            "FLAREGATE_ROUTES": json.dumps({"mock-1": ["mock"], "a": ["a"], "ab": ["a", "b"]}), **vars}
    if admin:
        base["FLAREGATE_ADMIN_KEY"] = admin
    return Gateway(settings_from_vars(base), ports), hub, tasks, sql


def get(path, token=None, query=None):
    headers = Headers([("authorization", f"Bearer {token}")] if token else [])
    return Request("GET", path, headers, b"", query or {})


async def test_server_timing_has_every_phase_and_the_overhead():
    gateway, hub, tasks, _ = build(ScriptedTransport(ok_completion()))
    response = await gateway.handle(chat({"model": "a", "messages": [{"role": "user", "content": "x"}]}))
    phases = dict(part.split(";dur=") for part in response.headers["server-timing"].split(", "))
    for name in ("parse", "auth", "ratelimit", "route", "cache", "upstream_ttfb", "upstream", "format",
                 "overhead", "total"):
        assert name in phases
    assert float(phases["overhead"]) == pytest.approx(float(phases["total"]) - float(phases["upstream"]), abs=0.02)
    await tasks.drain()
    sample = hub._store.samples(phases=True)[-1]
    assert set(sample["phases"]) >= {"parse", "auth", "ratelimit", "route", "cache", "upstream_ttfb", "upstream"}


async def test_traceparent_is_returned_and_is_the_span_sent_upstream():
    transport = ScriptedTransport(ok_completion())
    gateway, _, tasks, _ = build(transport)
    incoming = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    response = await gateway.handle(chat({"model": "a", "messages": [{"role": "user", "content": "x"}]},
                                         headers=[("traceparent", incoming), ("x-request-id", "req-7")]))
    returned = response.headers["traceparent"]
    assert returned == transport.calls[0]["headers"]["traceparent"]
    assert returned.startswith("00-" + "ab" * 16 + "-") and returned != incoming
    assert transport.calls[0]["headers"]["x-request-id"] == response.headers["x-request-id"] == "req-7"
    await tasks.drain()


async def test_a_stream_records_its_time_to_first_token():
    gateway, hub, tasks, _ = build()
    response = await gateway.handle(chat({"model": "mock-1", "stream": True,
                                          "messages": [{"role": "user", "content": "a b c"}]}))
    await collect(response.body)
    await tasks.drain()
    snapshot = hub.snapshot()
    assert snapshot["ttft_ms"]["samples"] == 1
    assert snapshot["totals"]["streams"] == 1


@pytest.mark.parametrize("path", ["/metrics", "/v1/analytics"])
async def test_operator_endpoints_need_the_admin_key_not_a_gateway_key(path):
    gateway, *_ = build()
    assert (await gateway.handle(get(path))).status == 401
    refused = await gateway.handle(get(path, KEY))
    assert refused.status == 401 and json.loads(refused.body)["error"]["code"] == "invalid_admin_key"
    assert (await gateway.handle(get(path, ADMIN))).status == 200
    assert (await gateway.handle(get(path, query={"token": ADMIN}))).status == 200
    as_header = Request("GET", path, Headers([("x-admin-key", ADMIN)]), b"", {})  # admin.py's other header
    assert (await gateway.handle(as_header)).status == 200


async def test_the_query_token_never_opens_the_admin_api():
    gateway, *_ = build()
    refused = await gateway.handle(get("/admin/cache/stats", query={"token": ADMIN}))
    assert refused.status == 401  # unsigned, and ?token= is for the browser-facing views only


def test_ws_authorization_is_synchronous_and_selects_the_protocol_without_echoing_the_key():
    gateway, *_ = build()
    offered = Headers([("sec-websocket-protocol", f"flaregate.v1, bearer.{ADMIN}")])
    assert gateway.authorize_admin(Request("GET", "/ws", offered, b"", {})) == "flaregate.v1"
    with pytest.raises(GatewayError) as refused:
        gateway.authorize_admin(Request("GET", "/ws", Headers([("sec-websocket-protocol", "bearer.wrong")]), b"", {}))
    assert refused.value.status == 401


async def test_without_an_admin_key_configured_the_operator_endpoints_are_closed():
    gateway, *_ = build(admin=None)
    response = await gateway.handle(get("/metrics", KEY))
    assert response.status == 403  # as the admin API: admin.require_admin is the one check
    assert json.loads(response.body)["error"]["code"] == "admin_disabled"


async def test_analytics_rejects_an_unknown_window_and_returns_the_views():
    gateway, _, tasks, _ = build()
    await gateway.handle(chat())
    await tasks.drain()
    bad = await gateway.handle(get("/v1/analytics", ADMIN, {"window": "2y"}))
    assert bad.status == 400 and json.loads(bad.body)["error"]["param"] == "window"
    data = json.loads((await gateway.handle(get("/v1/analytics", ADMIN, {"window": "24h"}))).body)
    assert list(data["windows"]) == ["24h"]
    assert data["windows"]["24h"]["by_model"]["mock-1"]["requests"] == 1
    assert data["where_the_time_goes"]["samples"] == 1 and data["where_the_time_goes"]["recommendation"]
    health = json.loads((await gateway.handle(get("/health"))).body)
    assert health["health"]["score"] == 100 and health["status"] == "ok"


async def test_hub_storage_errors_never_fail_an_api_request():
    gateway, hub, tasks, sql = build(ScriptedTransport(ok_completion()))
    sql.fail = True
    response = await gateway.handle(chat({"model": "a", "messages": [{"role": "user", "content": "x"}]}))
    assert response.status == 200
    await tasks.drain()  # the publish fails inside its background task, quietly
    health = await gateway.handle(get("/health"))
    assert health.status == 200 and json.loads(health.body)["health"] is None
    metrics = await gateway.handle(get("/metrics", ADMIN))
    assert metrics.status == 503 and json.loads(metrics.body)["error"]["code"] == "metrics_unavailable"
    sql.fail = False
    assert (await gateway.handle(chat())).status == 200
    await tasks.drain()
    assert hub.snapshot()["totals"]["requests"] == 1  # the lost batch, and only it, is gone


async def test_the_dashboard_is_its_files_served_from_the_package():
    """The page, its stylesheet and scripts come from console/static/ as they are on disk;
    the page loads nothing from elsewhere, and the CSP lets it run only its own files."""
    gateway, *_ = build()
    static = Path(flaregate.console.__file__).parent / "static"
    response = await gateway.handle(get("/dashboard"))
    page = response.body.decode()
    assert response.status == 200 and response.headers["content-type"].startswith("text/html")
    assert response.body == (static / "dashboard.html").read_bytes()
    assert "<canvas" in page and "http://" not in page and "https://" not in page  # nothing fetched elsewhere
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page and "<style>" not in page and " style=" not in page  # nothing inline to allow
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(loaded) == ["/dashboard/dashboard.css", "/dashboard/history.js", "/dashboard/live.js",
                              "/dashboard/requests.js", "/dashboard/teams.js"]
    for path in loaded:
        file = await gateway.handle(get(path))
        assert file.status == 200 and file.body == (static / path.rsplit("/", 1)[1]).read_bytes()
        kind = "text/css" if path.endswith(".css") else "text/javascript"
        assert file.headers["content-type"].startswith(kind) and file.headers["x-content-type-options"] == "nosniff"
    live = (await gateway.handle(get("/dashboard/live.js"))).body.decode()
    assert "new WebSocket" in live and "flaregate.v1" in live


@pytest.mark.parametrize("path", ["/dashboard/dashboard.html", "/dashboard/missing.js", "/dashboard/..%2Fendpoints.py",
                                  "/dashboard/__init__.py", "/dashboard/%2e%2e"])
async def test_only_the_dashboard_files_are_served(path):
    gateway, *_ = build()
    response = await gateway.handle(get(path))
    assert response.status == 404 and json.loads(response.body)["error"]["code"] == "unknown_url"


async def test_health_reads_the_hub_once_a_tick_until_this_process_sends_it_something():
    gateway, hub, tasks, _ = build(ScriptedTransport(ok_completion(), ok_completion()))
    reads = []
    summary = hub.health_summary
    hub.health_summary = lambda: reads.append(1) or summary()
    clock = gateway.ports.clock

    async def score() -> dict:
        response = await gateway.handle(get("/health"))
        assert response.status == 200
        return json.loads(response.body)["health"]

    first = await score()
    assert first["score"] == 100 and await score() == first and len(reads) == 1  # within the tick: no hub call
    await gateway.handle(chat({"model": "a", "messages": [{"role": "user", "content": "x"}]}))
    await score()  # an event recorded here, not yet sent: the hub is asked again
    await tasks.drain()
    after = await score()  # and again once the batch is in
    assert len(reads) == 3 and after["failure_rate"] == 0.0
    await score()
    assert len(reads) == 3
    clock.advance(gateway.settings.metrics_tick_seconds)
    await score()  # a tick later the hub is asked again, traffic or not
    assert len(reads) == 4
