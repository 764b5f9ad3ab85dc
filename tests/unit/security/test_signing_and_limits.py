"""Request signatures (wrong, old, replayed, tampered), input limits, header hygiene, CORS
and the privacy helpers."""

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaregate.http import Headers, Request
from flaregate.providers.mock import StaticResponse
from flaregate.redaction import redact
from flaregate.security.limits import sanitize_headers
from flaregate.security.privacy import anonymize_ip
from flaregate.security.signing import sign_request
from tests.support.security import ADMIN_KEY, CONFIG_KEY, UPSTREAM_KEY, SecureRig, chat_request


async def test_a_correctly_signed_admin_request_passes():
    rig = SecureRig()
    status, body, _ = await rig.call(rig.admin("GET", "/admin/keys"))
    assert status == 200, body


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda h: h, None),
        (lambda h: {**h, "x-flaregate-signature": "v1=" + "0" * 64}, "invalid_signature"),
        (lambda h: {**h, "x-flaregate-signature": "v2=abc"}, "invalid_signature"),
        (lambda h: {**h, "x-flaregate-nonce": "short"}, "invalid_signature"),
        (lambda h: {**h, "x-flaregate-nonce": "x" * 20}, "invalid_signature"),  # signed with another nonce
        (lambda h: {**h, "x-flaregate-timestamp": "soon"}, "invalid_signature"),
        (lambda h: {k: v for k, v in h.items() if not k.startswith("x-flaregate")}, "signature_required"),
    ],
)
async def test_signature_headers_are_checked(tamper, code):
    rig = SecureRig()
    body = json.dumps({"name": "x"}).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {ADMIN_KEY}",
               **sign_request(ADMIN_KEY, "POST", "/admin/keys", body, timestamp=int(rig.clock.now()))}
    status, answer, _ = await rig.call(Request("POST", "/admin/keys", Headers(tamper(headers)), body))
    if code is None:
        assert status == 201
    else:
        assert (status, answer["error"]["code"], answer["error"]["type"]) == (401, code, "authentication_error")


async def test_wrong_secret_tampered_body_and_other_path_are_rejected():
    rig = SecureRig()
    wrong = rig.admin("GET", "/admin/keys", secret="not-the-admin-key-000")
    assert (await rig.call(wrong))[1]["error"]["code"] == "invalid_signature"
    signed = rig.admin("POST", "/admin/keys", {"name": "a"})
    tampered = Request("POST", "/admin/keys", signed.headers, json.dumps({"name": "b"}).encode())
    assert (await rig.call(tampered))[1]["error"]["code"] == "invalid_signature"
    moved = Request("GET", "/admin/webhooks", rig.admin("GET", "/admin/keys").headers)
    assert (await rig.call(moved))[1]["error"]["code"] == "invalid_signature"


async def test_old_and_future_timestamps_are_rejected():
    rig = SecureRig({"SIGNATURE_MAX_AGE_SECONDS": "300"})
    now = int(rig.clock.now())
    for ts in (now - 301, now + 301):
        headers = {"authorization": f"Bearer {ADMIN_KEY}", **sign_request(ADMIN_KEY, "GET", "/admin/keys", timestamp=ts)}
        status, body, _ = await rig.call(Request("GET", "/admin/keys", Headers(headers)))
        assert (status, body["error"]["code"]) == (401, "signature_expired")
    ok = {"authorization": f"Bearer {ADMIN_KEY}", **sign_request(ADMIN_KEY, "GET", "/admin/keys", timestamp=now - 299)}
    assert (await rig.call(Request("GET", "/admin/keys", Headers(ok))))[0] == 200


async def test_a_replayed_nonce_is_rejected_even_by_another_gateway_instance():
    rig = SecureRig()
    request = rig.admin("GET", "/admin/keys")
    assert (await rig.call(request))[0] == 200
    status, body, _ = await rig.call(request)
    assert (status, body["error"]["code"]) == (401, "signature_replayed")
    other = rig.make_gateway()  # same store: another isolate on the edge, a restart locally
    assert (await other.handle(request)).status == 401
    # Nonces are kept only as long as their timestamp could be accepted.
    assert rig.sql.exec("SELECT expires_at FROM signing_nonces")[0]["expires_at"] == rig.clock.now() + 300


async def test_signing_secret_can_differ_from_the_admin_key_and_routes_are_configurable():
    rig = SecureRig({"FLAREGATE_SIGNING_SECRET": "separate-signing-secret", "SIGNED_ROUTES": "/admin/,/v1/"})
    assert (await rig.call(rig.admin("GET", "/admin/keys")))[1]["error"]["code"] == "invalid_signature"
    assert (await rig.call(rig.admin("GET", "/admin/keys", secret="separate-signing-secret")))[0] == 200
    unsigned = await rig.call(chat_request(CONFIG_KEY))
    assert unsigned[1]["error"]["code"] == "signature_required"
    body = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {CONFIG_KEY}",
               **sign_request("separate-signing-secret", "POST", "http://gw/v1/chat/completions?x=1", body,
                              timestamp=int(rig.clock.now()))}
    signed = Request("POST", "/v1/chat/completions", Headers(headers), body, {"x": "1"}, raw_query="x=1")
    assert (await rig.call(signed))[0] == 200


async def test_signatures_are_optional_elsewhere_but_checked_when_present():
    rig = SecureRig()
    assert (await rig.call(chat_request(CONFIG_KEY)))[0] == 200
    bad = chat_request(CONFIG_KEY, headers={"x-flaregate-signature": "v1=" + "a" * 64,
                                            "x-flaregate-timestamp": str(int(rig.clock.now())),
                                            "x-flaregate-nonce": "n" * 16})
    assert (await rig.call(bad))[1]["error"]["code"] == "invalid_signature"


# -- input limits -------------------------------------------------------------------------
def raw_chat(raw: bytes, headers=None) -> Request:
    return Request("POST", "/v1/chat/completions",
                   Headers({"content-type": "application/json", "authorization": f"Bearer {CONFIG_KEY}",
                            **(headers or {})}), raw)


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "x"}] * 11}).encode(),
         400, "too_many_messages"),
        (json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "x" * 101}]}).encode(),
         400, "message_too_long"),
        (json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": [{"type": "text", "text": "y" * 101}]}]}).encode(),
         400, "message_too_long"),
        (b'{"model": "mock-1", "messages": [{"role": "user", "content": "x"}], "x": ' + b"[" * 20 + b"]" * 20 + b"}",
         400, "json_too_deep"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "json_too_deep"),  # deeper than the interpreter's stack
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400, "json_too_deep"),
    ],
)
async def test_message_and_depth_limits(raw, status, code):
    rig = SecureRig({"MAX_MESSAGES": "10", "MAX_MESSAGE_CHARS": "100", "MAX_JSON_DEPTH": "8"})
    got, body, _ = await rig.call(raw_chat(raw))
    assert (got, body["error"]["code"]) == (status, code)


async def test_header_count_and_size_limits():
    rig = SecureRig({"MAX_HEADER_COUNT": "20", "MAX_HEADER_BYTES": "4096"})
    many = {f"x-h{i}": "v" for i in range(25)}
    assert (await rig.call(chat_request(CONFIG_KEY, headers=many)))[0] == 431
    big = {"x-big": "v" * 5000}
    status, body, _ = await rig.call(chat_request(CONFIG_KEY, headers=big))
    assert (status, body["error"]["code"]) == (431, "request_header_fields_too_large")
    assert (await rig.call(chat_request(CONFIG_KEY, headers={"x-small": "v" * 100})))[0] == 200


async def test_no_header_injection_from_request_data():
    rig = SecureRig()
    evil = "abc\r\nset-cookie: pwned=1"
    status, _, headers = await rig.call(chat_request(CONFIG_KEY, headers={"x-request-id": evil}))
    assert status == 200
    assert headers["x-request-id"].startswith("req_") and "set-cookie" not in headers
    assert all("\r" not in v and "\n" not in v for v in headers.values())


class EchoingUpstream:
    """An upstream whose error messages echo its key and a header with a line break."""

    def __init__(self):
        self.calls = []

    async def send(self, method, url, headers, body, timeout):
        self.calls.append(dict(headers))
        message = f"Incorrect API key provided: {UPSTREAM_KEY}. You sent {headers.get('authorization')}"
        return StaticResponse(401, {"content-type": "application/json", "retry-after": "1\r\nx-evil: 1"},
                              [json.dumps({"error": {"message": message}}).encode()])


async def test_upstream_errors_never_echo_keys_and_forwarded_headers_are_clean():
    upstream = EchoingUpstream()
    rig = SecureRig(transport=upstream)
    status, body, headers = await rig.call(chat_request(CONFIG_KEY, "a", headers={"x-request-id": "ok-id\nx: y"}))
    assert status == 401 and body["error"]["code"] == "upstream_rejected"
    text = json.dumps(body) + json.dumps(headers)
    assert UPSTREAM_KEY not in text and CONFIG_KEY not in text and "[redacted]" in body["error"]["message"]
    forwarded = upstream.calls[0]
    assert CONFIG_KEY not in json.dumps(forwarded)
    assert all("\n" not in v and "\r" not in v for v in forwarded.values())


# -- CORS ---------------------------------------------------------------------------------
def preflight(origin="https://app.example"):
    return Request("OPTIONS", "/v1/chat/completions",
                   Headers({"origin": origin, "access-control-request-method": "POST",
                            "access-control-request-headers": "authorization, content-type"}))


async def test_cors_is_off_by_default():
    rig = SecureRig()
    status, _, headers = await rig.call(preflight())
    assert status == 405 and not any(h.startswith("access-control-") for h in headers)
    _, _, headers = await rig.call(chat_request(CONFIG_KEY, headers={"origin": "https://app.example"}))
    assert not any(h.startswith("access-control-") for h in headers)


async def test_cors_when_on_answers_preflights_and_tags_responses():
    rig = SecureRig({"CORS_ALLOW_ORIGINS": "https://app.example, https://other.example"})
    status, _, headers = await rig.call(preflight())
    assert status == 204
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in headers["access-control-allow-methods"]
    assert "authorization" in headers["access-control-allow-headers"]
    status, _, headers = await rig.call(chat_request(CONFIG_KEY, headers={"origin": "https://app.example"}))
    assert status == 200 and headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in headers["access-control-expose-headers"] and headers["vary"] == "Origin"
    status, body, headers = await rig.call(preflight("https://evil.example"))
    assert status == 403 and body["error"]["code"] == "cors_origin_not_allowed"
    assert "access-control-allow-origin" not in headers
    _, _, headers = await rig.call(chat_request(CONFIG_KEY, headers={"origin": "https://evil.example"}))
    assert "access-control-allow-origin" not in headers


async def test_cors_wildcard():
    rig = SecureRig({"CORS_ALLOW_ORIGINS": "*"})
    _, _, headers = await rig.call(preflight("https://anything.example"))
    assert headers["access-control-allow-origin"] == "*"


# -- privacy ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("10.1.2.3", "10.1.2.0"),
        ("2001:db8:abcd:1234:5678::1", "2001:db8:abcd::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
        ("fe80::1%eth0", "fe80::"),
        ("not-an-ip", "unknown"),
        ("", "unknown"),
    ],
)
def test_anonymize_ip(ip, expected):
    assert anonymize_ip(ip) == expected


def test_redact_named_secrets_and_key_shapes():
    text = redact("key sk-proj-abcdefghijklmnop and mine=supersecretvalue, Bearer abc.def.ghi123",
                  ["supersecretvalue"])
    assert "abcdefghijklmnop" not in text and "supersecretvalue" not in text and "abc.def" not in text


async def test_analytics_events_carry_only_the_anonymised_address():
    rig = SecureRig()
    await rig.call(chat_request(CONFIG_KEY))
    events = []
    rig.gateway.analytics.record = events.append
    await rig.call(chat_request(CONFIG_KEY, content="other"))
    assert events[0]["client"] == "198.51.100.0"
    rig = SecureRig({"ANONYMIZE_IPS": "false"})
    rig.gateway.analytics.record = events.append
    await rig.call(chat_request(CONFIG_KEY))
    assert events[-1]["client"] == "198.51.100.23"


def _one_by_one(headers):
    """The rule, header by header: a token name of 1-256 characters, a str value with no
    control character but tab, all Latin-1."""
    token = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
    return {name: value for name, value in headers.items()
            if isinstance(value, str) and token.fullmatch(name) and not re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value)
            and all(ord(c) < 256 for c in value)}


header_names = st.one_of(st.sampled_from(["content-type", "x-request-id", "a\nb", "bad name", "x\n", "", "é"]),
                         st.text(alphabet="abz-\n\r:", min_size=0, max_size=8), st.just("n" * 257))
header_values = st.one_of(st.sampled_from(["ok", "tab\there", "split\r\nx: y", "nul\x00", "ünï", "€uro", ""]),
                          st.text(max_size=12), st.integers(), st.none())


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(header_names, header_values, max_size=6))
def test_sanitize_headers_keeps_exactly_the_safe_headers(headers):
    assert sanitize_headers(headers) == _one_by_one(headers)


def test_a_header_name_ending_in_a_newline_is_dropped():
    assert sanitize_headers({"x-ok": "1", "x-split\n": "2"}) == {"x-ok": "1"}
