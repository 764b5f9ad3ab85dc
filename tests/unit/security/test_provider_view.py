"""/v1/providers across tenants: recent upstream error texts may carry another tenant's
data, so only the admin key sees them (with provider keys redacted); a gateway key sees
the health of the routes its policy allows, each error reduced to time, kind and status."""

from __future__ import annotations

import inspect
import json

import pytest

from flaregate.gateway import Gateway
from flaregate.http import Headers, Request, json_response
from flaregate.providers.mock import StaticResponse
from flaregate.security.provider_view import provider_view
from tests.support.security import ADMIN_KEY, CONFIG_KEY, UPSTREAM_KEY, SecureRig, chat_request

TENANT_TEXT = "patient Jane Roe, card 4111 1111 1111 1111"


class EchoingUpstream:
    """Provider a answers 500 with the request's text and its Authorization header."""

    async def send(self, method, url, headers, body, timeout):
        prompt = json.loads(body)["messages"][-1]["content"]
        message = f"model overloaded while reading {prompt!r} (auth: {headers.get('authorization')})"
        return StaticResponse(500, {"content-type": "application/json"},
                              [json.dumps({"error": {"message": message}}).encode()])


async def failing_rig() -> tuple[SecureRig, str]:
    rig = SecureRig({"UPSTREAM_MAX_ATTEMPTS": "1"}, transport=EchoingUpstream())
    other = (await rig.create_key(name="other tenant", allowed_models=["mock-1"]))["key"]
    status, _, _ = await rig.call(chat_request(CONFIG_KEY, "a", content=TENANT_TEXT))
    assert status == 502
    return rig, other


def get(key: str, header: str = "authorization") -> Request:
    return Request("GET", "/v1/providers", Headers({header: f"Bearer {key}" if header == "authorization" else key}))


async def report_as_the_handler_will(rig: SecureRig, request: Request) -> dict:
    """The gateway's _providers handler with the change docs/security.md asks for."""
    gateway = rig.gateway
    detail, allows = await provider_view(request, gateway.settings, gateway.access)
    kinds = {p.name: p.kind for p in gateway.settings.providers}
    response = json_response(gateway.upstream.report(gateway.router.routes(), kinds, detail=detail, allows=allows))
    return json.loads(response.body)


async def test_a_gateway_key_never_sees_upstream_error_texts():
    rig, other = await failing_rig()
    for key in (CONFIG_KEY, other):
        status, body, _ = await rig.call(get(key))  # through the gateway as it is
        assert status == 200
        text = json.dumps(body)
        assert "Jane Roe" not in text and "overloaded" not in text and UPSTREAM_KEY not in text
        for report in (body, await report_as_the_handler_will(rig, get(key))):
            errors = [e for row in report["data"] for e in row["recent_errors"]]
            assert all(set(e) == {"ts", "kind", "status"} for e in errors)
            assert "Jane Roe" not in json.dumps(report)


async def test_a_gateway_key_sees_only_the_routes_its_policy_allows():
    rig, other = await failing_rig()
    restricted = await report_as_the_handler_will(rig, get(other))
    assert {row["route"] for row in restricted["data"]} == {"mock-1"}
    unrestricted = await report_as_the_handler_will(rig, get(CONFIG_KEY))
    assert {"a", "ab", "mock-1"} <= {row["route"] for row in unrestricted["data"]}
    [failed] = [row for row in unrestricted["data"] if row["route"] == "a"]
    assert failed["failures"] == 1 and failed["recent_errors"] == [
        {"ts": failed["recent_errors"][0]["ts"], "kind": "status", "status": 500}]


async def test_the_admin_key_sees_the_texts_with_provider_keys_redacted():
    rig, _ = await failing_rig()
    for request in (get(ADMIN_KEY), get(ADMIN_KEY, "x-admin-key")):
        report = await report_as_the_handler_will(rig, request)
        [failed] = [row for row in report["data"] if row["route"] == "a"]
        message = failed["recent_errors"][0]["message"]
        assert "Jane Roe" in message and UPSTREAM_KEY not in message and "[redacted]" in message


async def test_anyone_else_is_refused():
    rig, _ = await failing_rig()
    for request in (Request("GET", "/v1/providers"), get("fg-" + "x" * 43), get("wrong-admin-key-0123456789")):
        with pytest.raises(Exception) as caught:
            await provider_view(request, rig.gateway.settings, rig.gateway.access)
        assert getattr(caught.value, "status", None) == 401


@pytest.mark.skipif("provider_view" not in inspect.getsource(Gateway),
                    reason="gateway._providers does not call provider_view yet (the 3-line change in the report)")
async def test_the_gateways_handler_gives_the_admin_the_texts_and_keys_their_routes():
    rig, other = await failing_rig()
    admin = (await rig.call(get(ADMIN_KEY)))[1]
    assert "Jane Roe" in json.dumps(admin) and UPSTREAM_KEY not in json.dumps(admin)
    assert {row["route"] for row in (await rig.call(get(other)))[1]["data"]} == {"mock-1"}
