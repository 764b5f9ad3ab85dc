"""The MCP gateway's sealed session ids and its settings: a client can neither read nor
forge a session, nor use another key's; bad configuration names its field."""

from __future__ import annotations

import base64
import json

import pytest

from flaregate.config import ConfigError, settings_from_vars
from flaregate.mcp_gateway.jsonrpc import RpcError, check_message
from flaregate.mcp_gateway.sealing import Sealer
from flaregate.mcp_gateway.sessions import GatewaySession, Sessions
from flaregate.mcp_gateway.upstream import UpstreamSession


def test_a_sealed_value_opens_only_with_its_key_and_unchanged():
    sealer = Sealer(b"k" * 32, "mcp-session")
    token = sealer.seal(b'{"u":{"alpha":"upstream-session-secret"}}')
    assert sealer.open(token) == b'{"u":{"alpha":"upstream-session-secret"}}'
    assert b"upstream-session-secret" not in base64.urlsafe_b64decode(token[3:] + "==")  # unreadable
    assert Sealer(b"x" * 32, "mcp-session").open(token) is None  # another secret
    assert Sealer(b"k" * 32, "other-purpose").open(token) is None  # another purpose
    raw = bytearray(base64.urlsafe_b64decode(token[3:] + "=" * (-len(token[3:]) % 4)))
    for index in (0, 16, len(raw) - 1):  # nonce, ciphertext, tag: any flipped bit is refused
        flipped = bytearray(raw)
        flipped[index] ^= 1
        assert sealer.open("s1." + base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()) is None
    for junk in ("", "s1.", "s1.AAAA", "s2." + token[3:], token[:-6], "s1." + "A" * 9000, "s1.!!!!"):
        assert sealer.open(junk) is None
    assert sealer.seal(b"same") != sealer.seal(b"same")  # a fresh nonce each time


def test_a_session_belongs_to_its_key_and_ages_out():
    sessions = Sessions(b"secret", max_age_seconds=100)
    session = GatewaySession("key_a", "2025-11-25", 1000.0, {"beta": UpstreamSession("up-1", "2025-11-25")})
    token = sessions.seal(session)
    opened = sessions.open(token, "key_a", 1050.0)
    assert opened is not None and opened.upstream["beta"].session_id == "up-1"
    assert sessions.open(token, "key_b", 1050.0) is None
    assert sessions.open(token, "key_a", 1101.0) is None
    assert Sessions(b"another", 100).open(token, "key_a", 1050.0) is None  # another replica's secret
    sessions.replace(opened, "beta", UpstreamSession("up-2", "2025-11-25"))  # re-initialised in this isolate
    again = sessions.open(token, "key_a", 1060.0)
    assert again is not None and again.upstream["beta"].session_id == "up-2"


def test_mcp_settings_take_the_credential_from_its_variable():
    servers = [{"name": "gh", "url": "https://mcp.example/mcp", "credential_env": "GH_TOKEN", "tools": ["search*"]}]
    settings = settings_from_vars({"FLAREGATE_MCP_SERVERS": json.dumps(servers), "GH_TOKEN": "ghp_secret",
                                   "MCP_TOOL_PINNING": "true"})
    server = settings.mcp.servers[0]
    assert server.credential_headers() == {"authorization": "Bearer ghp_secret"}
    assert settings.mcp.pinning and "ghp_secret" not in repr(settings)
    for bad in ("[", '{"name": "x"}', json.dumps([{"name": "a.b", "url": "https://x"}]),
                json.dumps([{"name": "a", "url": "ftp://x"}]),
                json.dumps([{"name": "a", "url": "https://x"}, {"name": "a", "url": "https://y"}])):
        with pytest.raises(ConfigError):
            settings_from_vars({"FLAREGATE_MCP_SERVERS": bad})


@pytest.mark.parametrize(("message", "code"), [
    ([{"jsonrpc": "2.0", "id": 1, "method": "ping"}], -32600),
    ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, -32600),
    ({"jsonrpc": "2.0", "id": True, "method": "ping"}, -32600),
    ({"jsonrpc": "2.0", "id": 1, "method": ""}, -32600),
    ({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}, -32602),
    ({"jsonrpc": "2.0", "id": 1}, -32600),
    ("ping", -32600),
])
def test_malformed_messages_get_the_codes_the_spec_names(message, code):
    with pytest.raises(RpcError) as refused:
        check_message(message)
    assert refused.value.code == code and refused.value.status == 400
