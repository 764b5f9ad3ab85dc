"""The upgrade's admission in-process (a gateway over in-memory ports): where the session
connects and with which credential, the browser subprotocol, Azure-style paths, refusals and
what each records."""

from __future__ import annotations

import asyncio
import json

import pytest

from flaregate.errors import GatewayError
from flaregate.http import Headers, Request
from tests.support.security import CONFIG_KEY, UPSTREAM_KEY, SecureRig


def rig(**vars: str) -> SecureRig:
    providers = [{"name": "a", "base_url": "https://a.example/v1", "api_key_env": "A_API_KEY"},
                 {"name": "az", "base_url": "https://res.openai.azure.example/openai", "api_key_env": "A_API_KEY"},
                 {"name": "mock", "kind": "mock"}]
    routes = {"rt": ["a"], "rt-az": ["az/my-deployment"], "mock-1": ["mock"]}
    return SecureRig({"FLAREGATE_PROVIDERS": json.dumps(providers), "FLAREGATE_ROUTES": json.dumps(routes),
                      "REALTIME_AZURE_API_VERSIONS": json.dumps({"az": "2025-04-01-preview"}), **vars})


def upgrade(model: str | None, headers: dict[str, str] | None = None) -> Request:
    return Request("GET", "/v1/realtime", Headers(headers or {}), b"", {"model": model} if model else {},
                   client_ip="198.51.100.9")


async def admitted(r: SecureRig, request: Request):  # type: ignore[no-untyped-def]
    session = await r.gateway.realtime.open(request)
    session.abandon()  # never connected: the session ends and gives its slot back
    await session.relay.done.wait()
    return session


def test_the_session_connects_to_the_providers_realtime_path_with_the_gateways_key():
    r = rig()
    session = asyncio.run(admitted(r, upgrade("rt", {"authorization": f"Bearer {CONFIG_KEY}"})))
    [endpoint] = session.endpoints
    assert endpoint.url == "wss://a.example/v1/realtime?model=rt" and endpoint.provider == "a"
    assert endpoint.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CONFIG_KEY not in json.dumps(endpoint.headers)
    assert session.subprotocol is None


def test_azure_style_providers_get_the_deployment_path_and_an_api_key_header():
    r = rig()
    session = asyncio.run(admitted(r, upgrade("rt-az", {"authorization": f"Bearer {CONFIG_KEY}"})))
    [endpoint] = session.endpoints
    assert endpoint.url == ("wss://res.openai.azure.example/openai/realtime"
                            "?api-version=2025-04-01-preview&deployment=my-deployment")
    assert endpoint.headers["api-key"] == UPSTREAM_KEY and "authorization" not in endpoint.headers


def test_the_browser_subprotocol_carries_the_key_and_only_realtime_is_selected():
    r = rig()
    protocols = f"realtime, openai-insecure-api-key.{CONFIG_KEY}, openai-beta.realtime-v1"
    session = asyncio.run(admitted(r, upgrade("rt", {"sec-websocket-protocol": protocols})))
    assert session.subprotocol == "realtime"


@pytest.mark.parametrize(("model", "headers", "status", "code"), [
    ("rt", {}, 401, "invalid_api_key"),
    ("rt", {"sec-websocket-protocol": "openai-insecure-api-key."}, 401, "invalid_api_key"),
    (None, {"authorization": f"Bearer {CONFIG_KEY}"}, 400, None),
    ("nope", {"authorization": f"Bearer {CONFIG_KEY}"}, 404, "model_not_found"),
    ("mock-1", {"authorization": f"Bearer {CONFIG_KEY}"}, 400, "realtime_not_supported"),
    ("rt", {"authorization": "Bearer ek_not-a-secret"}, 401, "invalid_client_secret"),
    ("rt", {"authorization": f"Bearer {CONFIG_KEY}", "x-big": "v" * 40000}, 431, None),
])
def test_refusals_are_gateway_errors_recorded_once(model, headers, status, code):
    r = rig()

    async def refused() -> GatewayError:
        with pytest.raises(GatewayError) as exc:
            await r.gateway.realtime.open(upgrade(model, headers))
        await r.gateway.analytics.flush()
        await r.tasks.drain()
        return exc.value

    error = asyncio.run(refused())
    assert error.status == status and (code is None or error.code == code)
    assert "x-request-id" in error.headers
    record = r.hub.logs.get(error.headers["x-request-id"])
    assert record is not None and record["status"] == status and record["path"] == "/v1/realtime"
    if status == 401:  # nothing the client chose is a label before it is authenticated
        assert record.get("key_id") is None and record.get("model") is None
