"""The 2026-07-28 revision's envelope as the gateway checks it, compared with the official
SDK's own server-side check (``mcp.shared.inbound.classify_inbound_request``)."""

import pytest
from mcp.shared.inbound import InboundLadderRejection, classify_inbound_request, encode_header_value

from flaregate.mcp_gateway import modern
from flaregate.mcp_gateway.jsonrpc import RpcError

HANDSHAKE = ("2025-11-25",)
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


def message(method="tools/call", meta=META, **params):
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}


CASES = [
    (message(name="a.b"), {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "a.b"}),
    (message(name="a b/ü"), {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call",
                             "mcp-name": encode_header_value("a b/ü")}),
    (message(name="a.b"), {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "a.c"}),
    (message(name="a.b"), {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list", "mcp-name": "a.b"}),
    (message("tools/list"), {"mcp-method": "tools/list"}),
    (message("tools/list", meta={"io.modelcontextprotocol/protocolVersion": "2026-07-28"}), {}),
    (message("tools/list", meta=None), {}),
    (message("tools/list", meta={**META, "io.modelcontextprotocol/protocolVersion": "2030-01-01"}),
     {"mcp-protocol-version": "2030-01-01", "mcp-method": "tools/list"}),
    (message("resources/read", uri="flaregate://x/y"),
     {"mcp-protocol-version": "2026-07-28", "mcp-method": "resources/read", "mcp-name": "=?base64?!!?="}),
]


@pytest.mark.parametrize(("body", "headers"), CASES)
def test_the_envelope_is_judged_as_the_sdks_server_judges_it(body, headers):
    sdk = classify_inbound_request(body, headers=headers)
    try:
        version, _ = modern.check_envelope(body, headers, HANDSHAKE)
    except RpcError as exc:
        assert isinstance(sdk, InboundLadderRejection), (exc.code, sdk)
        assert exc.code == sdk.code and exc.status == 400
        if exc.code == modern.UNSUPPORTED_PROTOCOL_VERSION:
            assert "2026-07-28" in exc.data["supported"] and "2025-11-25" in exc.data["supported"]
    else:
        assert not isinstance(sdk, InboundLadderRejection), sdk
        assert version == sdk.protocol_version


def test_the_envelope_is_taken_off_before_a_handshake_era_server_and_results_are_shaped():
    sent = modern.without_envelope(message(name="a.b", meta={**META, "progressToken": 7}))
    assert sent["params"] == {"name": "a.b", "_meta": {"progressToken": 7}}
    assert "_meta" not in modern.without_envelope(message("tools/list"))["params"]
    listed = modern.shaped("tools/list", {"tools": []}, 30)
    assert listed == {"tools": [], "resultType": "complete", "cacheScope": "private", "ttlMs": 30000}
    assert modern.shaped("ping", {}, 30) == {"resultType": "complete"}
    assert modern.error_status(RpcError(-32601, "x")) == 404
    assert modern.error_status(RpcError(-32602, "denied", status=403)) == 403


@pytest.mark.parametrize("name", ["github.search", "  padded", "naïve", "=?base64?eA==?="])
def test_a_request_to_a_2026_server_carries_an_envelope_its_sdk_accepts(name):
    sent, headers = modern.with_envelope({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                          "params": {"name": name, "_meta": {"progressToken": 1}}}, "2026-07-28")
    assert headers["mcp-name"] == encode_header_value(name)
    verdict = classify_inbound_request(sent, headers=headers)
    assert not isinstance(verdict, InboundLadderRejection), verdict
    assert verdict.protocol_version == "2026-07-28" and sent["params"]["_meta"]["progressToken"] == 1
