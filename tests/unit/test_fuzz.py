"""Fuzzing the request parser (``Gateway.handle``), the admin API and batch input files
(JSONL lines) with malformed bodies, headers, paths, methods and lines: never a 5xx, never
an unhandled exception, always an OpenAI-style error. About 3 000 examples in all, and 900
more for the Realtime API (client secrets, the upgrade's admission, the relay's frames);
derandomised so CI runs are repeatable."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from urllib.parse import parse_qsl

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flaregate.batches.store import JobStore
from flaregate.cache.semantic.index import LocalSemanticIndex, SqlSemanticIndex
from flaregate.config import ConfigError, settings_from_vars
from flaregate.errors import GatewayError
from flaregate.gateway import Gateway
from flaregate.hosts.local.batch_worker import LocalJobClient
from flaregate.hosts.local.blob_dir import DirectoryBlobStore
from flaregate.hosts.local.storage import SqliteStorage
from flaregate.http import Headers, Request
from flaregate.multipart import Upload, encode_form
from flaregate.ports import Ports
from flaregate.providers.mock import StaticResponse
from flaregate.realtime.api import no_provider
from flaregate.realtime.relay import Relay
from flaregate.realtime.settings import RealtimeSettings
from flaregate.security.signing import sign_request
from tests.support import security
from tests.support.fakes import FakeClock, MemorySql
from tests.support.security import ADMIN_KEY, CONFIG_KEY, SecureRig
from tests.unit.realtime.test_relay import Meter, Sock

FUZZ = settings(max_examples=750, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class AlwaysOk:
    async def send(self, method, url, headers, body, timeout):
        if json.loads(body).get("stream") is True:  # a stream is answered as one (the gateway checks)
            chunk = {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}
            return StaticResponse(200, {"content-type": "text/event-stream"},
                                  [b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n"])
        payload = {"choices": [{"message": {"role": "assistant", "content": "ok"}}], "usage": {}}
        return StaticResponse(200, {"content-type": "application/json"}, [json.dumps(payload).encode()])


class Rig:
    """One gateway per test (not per example); the loop is reused across examples."""

    def __init__(self, vars: dict[str, str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.secure = SecureRig({"RATE_LIMIT_CAPACITY": "1000000", "RATE_LIMIT_REFILL_PER_SECOND": "1000",
                                 "MAX_JSON_DEPTH": "16", "WEBHOOK_MAX_ATTEMPTS": "1", **vars}, transport=AlwaysOk())

    def run(self, request: Request) -> None:
        self.loop.run_until_complete(self._check(request))

    async def _check(self, request: Request) -> None:
        response = await self.secure.gateway.handle(request)
        body = response.body
        if response.is_stream:
            body = b"".join([chunk async for chunk in body])
        await self.secure.tasks.drain()
        assert response.status < 500, (request, response.status, body[:300])
        for name, value in response.headers.items():
            assert "\n" not in value and "\r" not in value, name
        if response.status >= 400:
            error = json.loads(body)["error"]
            assert set(error) == {"message", "type", "code", "param"}
            assert isinstance(error["message"], str) and error["message"]
            assert ADMIN_KEY not in error["message"] and CONFIG_KEY not in error["message"]


class NoUnhandled(logging.Handler):
    """Fails the test if the gateway logs an unhandled error (it would answer 500)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def watch_errors():
    handler = NoUnhandled()
    logging.getLogger("flaregate").addHandler(handler)
    return handler


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                          max_leaves=20)
message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", "x", ""]),
                           "content": st.one_of(st.text(max_size=30), json_value)}),
    json_value,
)
valid_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "developer"]),
     "content": st.one_of(st.text(max_size=40), st.lists(st.fixed_dictionaries(
         {"type": st.just("text"), "text": st.text(max_size=20)}), max_size=3))},
    optional={"name": json_value})
valid_chat = st.fixed_dictionaries(
    {"model": st.sampled_from(["mock-1", "a", "ab"]), "messages": st.lists(valid_message, min_size=1, max_size=5)},
    optional={"stream": st.booleans(), "temperature": json_value, "tools": json_value, "user": st.text(max_size=10)})
chat_body = st.one_of(
    valid_chat,
    valid_chat,

    st.fixed_dictionaries({"model": st.one_of(st.sampled_from(["mock-1", "a", "ab", "nope", ""]), json_value),
                           "messages": st.one_of(st.lists(message, max_size=4), json_value)},
                          optional={"stream": st.one_of(st.booleans(), json_value),
                                    "temperature": json_value, "n": json_value}),
    json_value,
)
body_bytes = st.one_of(
    chat_body.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(1, 40).map(lambda n: b"[" * n * 10 + b"]" * n * 10),
)
header_name = st.one_of(st.sampled_from(["content-type", "authorization", "x-request-id", "traceparent", "origin",
                                         "x-admin-key", "content-length", "cookie", "x-flaregate-timestamp",
                                         "x-flaregate-nonce", "x-flaregate-signature"]),
                        st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20),
                        st.text(min_size=1, max_size=20))
header_value = st.one_of(st.text(max_size=60), st.sampled_from([
    "application/json", "text/plain", f"Bearer {CONFIG_KEY}", "Bearer ", "bearer x", "v1=zz", "-1", "99999999999999",
    "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "a\r\nb: c"]))
headers = st.lists(st.tuples(header_name, header_value), max_size=5)
path = st.one_of(st.sampled_from(["/v1/chat/completions", "/v1/models", "/health", "/ws", "/admin/keys",
                                  "/admin/webhooks", "/admin/keys/key_x", "/admin/webhooks/wh_1/deliveries",
                                  "/admin/webhooks/wh_1/test", "/", "//", "/v1/../admin/keys"]),
                 st.text(max_size=40).map(lambda t: "/" + t))
method = st.one_of(st.sampled_from(["GET", "POST", "DELETE", "PUT", "OPTIONS", "HEAD", "PATCH"]), st.text(max_size=10))


def test_fuzz_the_api_with_anything():
    rig = Rig({"CORS_ALLOW_ORIGINS": "https://app.example"})
    errors = watch_errors()

    @FUZZ
    @given(method=method, path=path, headers=headers, body=body_bytes, ip=st.one_of(st.none(), st.text(max_size=40)))
    def run(method, path, headers, body, ip):
        rig.run(Request(method, path, Headers(headers), body, client_ip=ip))

    run()
    assert not errors.records


def test_fuzz_chat_bodies_from_an_authenticated_client():
    rig = Rig({})
    errors = watch_errors()

    @FUZZ
    @given(body=body_bytes, extra=headers)
    def run(body, extra):
        base = [("content-type", "application/json"), ("authorization", f"Bearer {CONFIG_KEY}")]
        rig.run(Request("POST", "/v1/chat/completions", Headers(base + extra), body))

    run()
    assert not errors.records


def test_fuzz_the_admin_api_past_authentication():
    rig = Rig({"SIGNED_ROUTES": ""})
    errors = watch_errors()
    admin_body = st.one_of(
        st.fixed_dictionaries({}, optional={"name": json_value, "allowed_models": json_value,
                                            "allowed_routes": json_value, "rate_limit_policy": json_value,
                                            "budget_usd": json_value, "expires_at": json_value,
                                            "expires_in_seconds": json_value, "url": json_value,
                                            "events": json_value, "secret": json_value}),
        json_value,
    ).map(lambda v: json.dumps(v).encode())

    @FUZZ
    @given(method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
           path=st.one_of(st.sampled_from(["/admin/keys", "/admin/webhooks"]),
                          st.text(max_size=30).map(lambda t: "/admin/keys/" + t),
                          st.text(max_size=30).map(lambda t: "/admin/webhooks/" + t + "/deliveries")),
           body=st.one_of(admin_body, body_bytes), ctype=st.sampled_from(["application/json", "text/plain", ""]))
    def run(method, path, body, ctype):
        hs = Headers([("content-type", ctype), ("authorization", f"Bearer {ADMIN_KEY}")])
        rig.run(Request(method, path, hs, body))

    run()
    assert not errors.records


def test_fuzz_signed_admin_requests_with_mangled_signature_headers():
    rig = Rig({})
    errors = watch_errors()
    now = int(rig.secure.clock.now())

    @FUZZ
    @given(body=body_bytes, ts=st.one_of(st.integers(-10**13, 10**13), st.just(now)),
           mangle=st.dictionaries(st.sampled_from(["x-flaregate-timestamp", "x-flaregate-nonce",
                                                   "x-flaregate-signature"]), header_value, max_size=3))
    def run(body, ts, mangle):
        signed = sign_request(ADMIN_KEY, "POST", "/admin/keys", body, timestamp=ts)
        hs = {"content-type": "application/json", "authorization": f"Bearer {ADMIN_KEY}", **signed, **mangle}
        rig.run(Request("POST", "/admin/keys", Headers(hs), body))

    run()
    assert not errors.records


# -- the Files and Batches APIs: JSONL lines as attack input ----------------------------------

batch_line = st.one_of(
    st.fixed_dictionaries({"custom_id": st.one_of(st.sampled_from(["a", "b", "c", ""]), json_value),
                           "method": st.one_of(st.just("POST"), json_value),
                           "url": st.one_of(st.sampled_from(["/v1/chat/completions", "/v1/embeddings", ""]),
                                            json_value),
                           "body": st.one_of(chat_body, json_value)},
                          optional={"extra": json_value}).map(lambda v: json.dumps(v).encode()),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=120).filter(lambda b: b"\n" not in b),
    st.integers(1, 40).map(lambda n: b"[" * n * 10),
)


def test_fuzz_batch_input_files_never_crash_the_runner_nor_answer_a_5xx(tmp_path):
    rig = Rig({"BATCH_LINE_MAX_BYTES": "2000"})
    jobs = LocalJobClient(JobStore(MemorySql()))
    ports = dataclasses.replace(rig.secure.gateway.ports, blobs=DirectoryBlobStore(tmp_path), jobs=jobs)
    gateway = rig.secure.gateway = Gateway(rig.secure.settings, ports)
    assert gateway.batches is not None
    errors = watch_errors()
    auth = ("authorization", f"Bearer {CONFIG_KEY}")

    async def one(lines: list[bytes], separator: bytes) -> None:
        ctype, form = encode_form([("purpose", "batch")], [("file", Upload("in.jsonl", "application/jsonl",
                                                                             separator.join(lines)))])
        uploaded = await gateway.handle(Request("POST", "/v1/files", Headers([("content-type", ctype), auth]), form))
        assert uploaded.status == 200, uploaded.body
        file_id = json.loads(uploaded.body)["id"]
        body = json.dumps({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
        created = await gateway.handle(Request("POST", "/v1/batches", Headers([("content-type", "application/json"),
                                                                               auth]), body.encode()))
        assert created.status == 200, created.body
        batch_id = json.loads(created.body)["id"]
        owner = (await jobs.call("", "batches.get", {"id": batch_id}))["_owner"]
        assert await gateway.batches.get().runner.run(owner, batch_id, "fuzz")
        await rig.secure.tasks.drain()
        done = await jobs.call("", "batches.get", {"id": batch_id})
        assert done["status"] in ("completed", "failed"), done
        counts = done["request_counts"]
        if done["status"] == "failed":
            assert done["errors"]["data"] and all(set(e) == {"code", "message", "param", "line"}
                                                  for e in done["errors"]["data"])
        else:
            assert counts["total"] == counts["completed"] + counts["failed"]
            for field in ("output_file_id", "error_file_id"):
                if done[field]:
                    content = await gateway.handle(Request("GET", f"/v1/files/{done[field]}/content",
                                                           Headers([auth]), params={"file_id": done[field]}))
                    chunks = b"".join([c async for c in content.body])  # type: ignore[union-attr]
                    for row in chunks.splitlines():
                        assert set(json.loads(row)) == {"id", "custom_id", "response", "error"}

    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(lines=st.lists(batch_line, min_size=0, max_size=6), separator=st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
    def run(lines, separator):
        rig.loop.run_until_complete(one(lines, separator))

    run()
    assert not errors.records


def test_fuzz_teams_credentials_and_rotation_past_authentication():
    """Teams, keys in teams, key changes and rotation, scoped credentials, the audit log and
    the spend reports (with their budgets): whatever the body or query, never a 5xx (a team and a key exist, so the checks run deep)."""
    rig = Rig({"SIGNED_ROUTES": ""})
    errors = watch_errors()
    loop, secure = rig.loop, rig.secure
    status, _, _ = loop.run_until_complete(secure.call(secure.admin(
        "POST", "/admin/teams", {"id": "t", "allowed_models": ["mock-*"], "budget_usd_month": 5}, sign=False)))
    assert status == 201
    key = loop.run_until_complete(secure.call(secure.admin("POST", "/admin/keys", {"team_id": "t"}, sign=False)))[1]
    fields = ["id", "name", "team_id", "allowed_models", "allowed_routes", "allowed_mcp_servers", "allowed_mcp_tools",
              "tags", "rate_limit_policy", "budget_usd", "budget_usd_day", "budget_usd_month", "budget_tokens_day",
              "budget_tokens_month", "grace_seconds", "role", "priority", "private"]
    team_body = st.one_of(
        st.fixed_dictionaries({}, optional={f: json_value for f in fields}),
        st.fixed_dictionaries({}, optional={"team_id": st.sampled_from(["t", "nope", "", None]),
                                            "allowed_models": st.lists(st.sampled_from(["mock-1", "*", "x"]))}),
        json_value,
    ).map(lambda v: json.dumps(v).encode())
    paths = ["/admin/teams", "/admin/teams/t", "/admin/teams/t/usage", "/admin/credentials", "/admin/audit",
             f"/admin/keys/{key['id']}", f"/admin/keys/{key['id']}/rotate", "/admin/keys", "/admin/teams/t/spend",
             "/v1/analytics?group_by=team", "/v1/analytics?group_by=key&format=csv"]

    @FUZZ
    @given(method=st.sampled_from(["GET", "POST", "PATCH", "DELETE"]),
           path=st.one_of(st.sampled_from(paths), st.text(max_size=30).map(lambda t: "/admin/teams/" + t),
                          st.text(max_size=30).map(lambda t: "/admin/credentials/" + t),
                          st.text(max_size=20).map(lambda t: "/admin/audit?limit=" + t),
                          st.text(max_size=20).map(lambda t: "/admin/teams/t/spend?window=" + t),
                          st.text(max_size=24).map(lambda t: "/v1/analytics?group_by=" + t),
                          st.text(max_size=12).map(lambda t: "/v1/analytics?group_by=team&format=" + t)),
           body=st.one_of(team_body, body_bytes))
    def run(method, path, body):
        bare, _, query = path.partition("?")
        hs = Headers([("content-type", "application/json"), ("authorization", f"Bearer {ADMIN_KEY}")])
        rig.run(Request(method, bare, hs, body, dict(parse_qsl(query, keep_blank_values=True)), raw_query=query))

    run()
    assert not errors.records


class McpUpstream:
    """An MCP server's answers for the fuzzer (in process: the fuzzer runs thousands of
    examples; tests/integration/test_mcp_gateway.py drives real MCP server processes)."""

    async def send(self, method, url, headers, body, timeout):
        if method == "GET":  # the session's standalone stream: a request, notifications, junk, then its end
            events = [{"jsonrpc": "2.0", "id": 9, "method": "roots/list"},
                      {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "note://x"}},
                      {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": 7}},
                      {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"},
                      {"jsonrpc": "2.0", "id": 3, "result": {}}, [1, 2]]
            raw = b"".join(b"event: message\ndata: " + json.dumps(e).encode() + b"\n\n" for e in events)
            return StaticResponse(200, {"content-type": "text/event-stream"}, [b": hi\n\ndata: {not json\n\n", raw])
        message = json.loads(body) if body else {}
        if "id" not in message:
            return StaticResponse(202, {}, [b""])
        answers = {"initialize": {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                                  "serverInfo": {"name": "fuzz", "version": "1"}},
                   "tools/list": {"tools": [{"name": "add", "inputSchema": {"type": "object"}}]},
                   "tools/call": {"content": [{"type": "text", "text": "ok"}]}}
        answer = {"jsonrpc": "2.0", "id": message["id"], "result": answers.get(message.get("method"), {})}
        if message.get("method") == "tools/call":  # streamed, with a progress notification first
            progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}
            events = b"".join(b"event: message\ndata: " + json.dumps(m).encode() + b"\n\n" for m in (progress, answer))
            return StaticResponse(200, {"content-type": "text/event-stream"}, [events])
        return StaticResponse(200, {"content-type": "application/json", "mcp-session-id": "up-1"},
                              [json.dumps(answer).encode()])


def mirrored(body: bytes) -> list[tuple[str, str]]:
    """``Mcp-Method`` / ``Mcp-Name`` / ``MCP-Protocol-Version`` as the body's envelope has them."""
    try:
        message = json.loads(body)
    except ValueError:
        return []
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return []
    out = [("mcp-method", message["method"])]
    params = message.get("params")
    if isinstance(params, dict) and isinstance(params.get("name"), str):
        out.append(("mcp-name", params["name"]))
    meta = params.get("_meta") if isinstance(params, dict) else None
    if isinstance(meta, dict) and isinstance(meta.get("io.modelcontextprotocol/protocolVersion"), str):
        out.append(("mcp-protocol-version", meta["io.modelcontextprotocol/protocolVersion"]))
    return out


def test_fuzz_the_mcp_endpoint_with_json_rpc_junk():
    servers = [{"name": "fz", "url": "http://mcp.invalid/mcp", "price_per_call_usd": 0.01, "tool_prices": {"a*": 0.02}},
               {"name": "fz26", "url": "http://mcp26.invalid/mcp", "revision": "2026-07-28"}]
    # Tool-call limits and a tool budget: past the first calls the fuzzer meets their refusals too.
    limits = [{"name": "fz-tool", "algorithm": "fixed_window", "limit": 3, "window_seconds": 600,
               "scope": "key+mcp_tool", "mcp_tools": ["fz.*"]},
              {"name": "fz-server", "algorithm": "sliding_window", "limit": 5, "window_seconds": 600,
               "scope": "mcp_server"}]
    budgets = [{"name": "fz-money", "period": "day", "limit_usd": 0.05, "mcp_tools": ["fz.*"]}]
    secure = SecureRig({"FLAREGATE_MCP_SERVERS": json.dumps(servers), "MAX_JSON_DEPTH": "16",
                        "FLAREGATE_RATE_LIMITS": json.dumps(limits), "FLAREGATE_BUDGETS": json.dumps(budgets),
                        "FLAREGATE_MCP_SESSION_SECRET": "fuzz-session-secret-0123456789"}, transport=McpUpstream())
    loop = asyncio.new_event_loop()
    errors = watch_errors()
    auth = [("content-type", "application/json"), ("authorization", f"Bearer {CONFIG_KEY}"),
            ("accept", "application/json, text/event-stream")]

    async def handle(request: Request):
        response = await secure.gateway.handle(request)
        body = response.body
        if response.is_stream:
            body = b"".join([chunk async for chunk in body])
        return response, body

    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    opened, _ = loop.run_until_complete(handle(Request("POST", "/mcp", Headers(auth), json.dumps(init).encode())))
    session = opened.headers["mcp-session-id"]
    rpc_message = st.fixed_dictionaries(
        {"jsonrpc": st.one_of(st.just("2.0"), json_value),
         "method": st.one_of(st.sampled_from(["initialize", "ping", "tools/list", "tools/call", "server/discover",
                                              "notifications/cancelled", "notifications/initialized", "x"]),
                             json_value)},
        optional={"id": st.one_of(st.integers(), st.text(max_size=10), json_value),
                  "params": st.one_of(st.fixed_dictionaries({}, optional={
                      "name": st.one_of(st.sampled_from(["fz.add", "fz26.add", "fz.", ".add", "fz.nope", "nope.add"]),
                                       json_value),
                      "arguments": json_value, "protocolVersion": json_value, "cursor": json_value,
                      "requestId": json_value,
                      # the 2026-07-28 per-request envelope, whole, partial or junk
                      "_meta": st.one_of(st.fixed_dictionaries({}, optional={
                          "io.modelcontextprotocol/protocolVersion": st.one_of(
                              st.sampled_from(["2026-07-28", "2025-11-25"]), json_value),
                          "io.modelcontextprotocol/clientCapabilities": json_value,
                          "progressToken": json_value}), json_value)}), json_value)})
    body = st.one_of(rpc_message.map(lambda m: json.dumps(m).encode()),
                     st.lists(rpc_message, max_size=3).map(lambda m: json.dumps(m).encode()), body_bytes)
    sid = st.one_of(st.just(session), st.just(session[:-2] + "AA"), st.text(max_size=40), st.none())

    routing = st.lists(st.tuples(st.sampled_from(["mcp-method", "mcp-name"]),
                                 st.one_of(st.sampled_from(["tools/call", "tools/list", "fz.add", "=?base64?ZnouYWRk?=",
                                                            "=?base64?!!?="]), st.text(max_size=12))), max_size=2)

    @FUZZ
    @given(body=body, sid=sid, version=st.one_of(st.none(), st.sampled_from(["2025-11-25", "2026-07-28", "x"])),
           method=st.sampled_from(["POST", "POST", "POST", "GET", "DELETE"]), extra=headers, routed=routing,
           mirror=st.booleans())
    def run(body, sid, version, method, extra, routed, mirror):
        hs = list(auth) + extra + routed
        if mirror:  # the routing headers a 2026-07-28 client sends, so the envelope's checks pass and it is served
            hs += mirrored(body)
        if sid is not None:
            hs.append(("mcp-session-id", sid))
        if version is not None:
            hs.append(("mcp-protocol-version", version))
        response, raw = loop.run_until_complete(handle(Request(method, "/mcp", Headers(hs), body)))
        loop.run_until_complete(secure.tasks.drain())
        assert response.status < 500, (body, response.status, raw[:300])
        if response.status >= 400 and raw:
            parsed = json.loads(raw)
            error = parsed["error"]
            assert isinstance(error.get("code"), int) or set(error) == {"message", "type", "code", "param"}, parsed
            assert CONFIG_KEY not in raw.decode(errors="replace")

    run()
    assert not errors.records


REALTIME = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_fuzz_realtime_client_secrets_and_upgrades():
    """``POST /v1/realtime/client_secrets`` with any body, and the upgrade's admission with any
    query and headers: an OpenAI error under 500, or an admitted session (ended at once)."""
    rig = Rig({})
    errors = watch_errors()
    secret_body = st.one_of(
        st.fixed_dictionaries({}, optional={"session": st.one_of(st.fixed_dictionaries(
            {"type": st.just("realtime"), "model": st.one_of(st.sampled_from(["mock-1", "nope", ""]), json_value)},
            optional={"instructions": json_value}), json_value),
            "expires_after": st.one_of(st.fixed_dictionaries({"seconds": json_value}), json_value)}),
        json_value).map(lambda v: json.dumps(v).encode())

    @REALTIME
    @given(body=st.one_of(secret_body, body_bytes))
    def secrets(body):
        hs = Headers([("content-type", "application/json"), ("authorization", f"Bearer {CONFIG_KEY}")])
        rig.run(Request("POST", "/v1/realtime/client_secrets", hs, body))

    admitted: list[Request] = []

    async def admit(request: Request) -> None:
        try:
            session = await rig.secure.gateway.realtime.open(request)
        except GatewayError as exc:
            assert exc.status < 500 and exc.message, exc
            return
        admitted.append(request)
        # Never connected: no provider accepted; the client hears it, the session gives its slot back.
        client = Sock()
        session.refuse(client, no_provider(["'a' could not be reached"]))
        await session.relay.done.wait()
        error = json.loads(client.sent[0])
        assert error["type"] == "error" and error["error"]["code"] == "upstream_unreachable"
        assert client.closed is not None and client.closed[0] == 1011

    @REALTIME
    @given(query=st.dictionaries(st.sampled_from(["model", "intent", "call_id", "x"]), st.text(max_size=20), max_size=3),
           model=st.one_of(st.none(), st.sampled_from(["mock-1", "a", "ab", "", "nope"])),
           extra=headers, protocols=st.lists(st.one_of(st.sampled_from(
               ["realtime", f"openai-insecure-api-key.{CONFIG_KEY}", "openai-insecure-api-key.", "ek_x"]),
               st.text(max_size=20)), max_size=3), bearer=st.booleans())
    def upgrade(query, model, extra, protocols, bearer):
        key = [("authorization", f"Bearer {CONFIG_KEY}")] if bearer else []
        hs = Headers([*key, *extra, ("sec-websocket-protocol", ", ".join(protocols))])
        if model is not None:
            query = {**query, "model": model}
        rig.loop.run_until_complete(admit(Request("GET", "/v1/realtime", hs, b"", query)))

    secrets()
    upgrade()
    assert admitted  # some upgrades were admitted (the examples reach past the key and the route)
    assert not errors.records


def test_fuzz_the_realtime_relay_with_any_frames():
    """Any frame either way (JSON of any shape, markers inside text, bytes): the relay never
    raises, forwards what it does not read, and ends at most once."""
    loop = asyncio.new_event_loop()
    frame = st.one_of(json_value.map(json.dumps), st.text(max_size=60), st.binary(max_size=40),
                      st.sampled_from(['{"type":"response.create"}', '{"type":"response.done","response":7}',
                                       '{"type":"conversation.item.create","item":[]}', '"response.done"',
                                       '{"type":"session.update","session":{"instructions":5}}']))

    @REALTIME
    @given(frames=st.lists(st.tuples(st.booleans(), frame), max_size=12))
    def run(frames):
        async def go() -> None:
            ended: list[Relay] = []

            async def on_end(relay: Relay) -> None:
                ended.append(relay)

            relay = Relay(RealtimeSettings(max_message_bytes=1024), FakeClock(), Meter(), True, on_end)
            client, upstream = Sock(), Sock()
            relay.start(client, upstream)
            for from_client, data in frames:
                (relay.from_client if from_client else relay.from_upstream)(data)
            for _ in range(5):
                await asyncio.sleep(0)
            relay.client_closed(1000)
            await relay.done.wait()
            assert len(ended) == 1

        loop.run_until_complete(go())

    run()


semantic_field = st.sampled_from(["threshold", "embeddings", "max_entries", "scope_by_user", "shortlist", "x"])


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(semantic=st.one_of(json_value, st.dictionaries(semantic_field, json_value, max_size=4)))
def test_fuzz_semantic_cache_settings_start_or_stop_naming_the_field(semantic):
    """Any ``semantic_cache`` value: the settings load (known fields only, within bounds, an
    embeddings route that exists), or the start stops with a ConfigError naming
    semantic_cache; never another exception."""
    routes = {"chat": {"targets": ["mock"], "semantic_cache": semantic}, "embed": ["mock/bow-embed"]}
    try:
        settings = settings_from_vars({"FLAREGATE_ROUTES": json.dumps(routes)})
    except ConfigError as exc:
        assert "semantic_cache" in str(exc)
        return
    loaded = settings.cache.route_semantic["chat"]
    assert isinstance(semantic, dict) and set(semantic) <= set(type(loaded).model_fields)
    assert 0 < loaded.threshold <= 1 and loaded.embeddings in ("embedded", "embed") and loaded.max_entries >= 1


def test_fuzz_the_semantic_cache(tmp_path, monkeypatch):
    """Prompts, end-user and opt-out headers, and feedback bodies against routes with the
    semantic cache on (a real SQLite index; bag-of-words embeddings from the mock provider):
    never a 5xx, and a prompt scoped to one end user never answers another's."""
    storage = SqliteStorage(tmp_path / "semantic.sqlite3")

    def make_gateway(self):
        ports = Ports(clock=self.clock, cache=security.MemoryKV(self.clock), upstream=self.transport,
                      tasks=self.tasks, rate_limiter=security.LocalRateLimiterClient(
                          security.RateLimiter(self.sql, self.clock)),
                      metrics_hub=security.LocalHubClient(self.hub), security=security.LocalSecurityClient(self.store),
                      semantic_index=LocalSemanticIndex(SqlSemanticIndex(storage, self.clock)))
        return Gateway(self.settings, ports)

    monkeypatch.setattr(security.SecureRig, "make_gateway", make_gateway)
    semantic = {"embeddings": "bow-embed", "threshold": 0.3}
    routes = {"mock-1": {"targets": ["mock"], "semantic_cache": semantic},
              "mock-2": {"targets": ["mock"], "semantic_cache": {**semantic, "scope_by_user": True}},
              "bow-embed": ["mock/bow-embed"], "ab": ["a", "b"], "a": ["a"]}
    rig = Rig({"SIGNED_ROUTES": "", "CACHE_TTL_SECONDS": "300", "FLAREGATE_ROUTES": json.dumps(routes)})
    errors = watch_errors()
    semantic_headers = st.lists(st.tuples(
        st.sampled_from(["x-flaregate-end-user", "x-flaregate-semantic-cache", "cache-control",
                         "x-flaregate-cache-namespace", "x-flaregate-cache-ttl"]),
        st.one_of(header_value, st.sampled_from(["alice", "bob", "off", "no-store", "no-cache", "ns1", "5"]))),
        max_size=3)
    prompts = st.one_of(st.text(max_size=40), st.sampled_from(
        ["What is 2 + 2?", "What is 2 + 3?", "Is it not safe?", "capital of France", "capital of Germany",
         "`ls -la`", "10 km in miles", "Quelle est la capitale ?", "", " ", "\x00", "a" * 9000]))
    feedback = st.one_of(st.fixed_dictionaries({}, optional={"request_id": json_value, "wrong": json_value}),
                         json_value).map(lambda v: json.dumps(v).encode())

    @settings(max_examples=300, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(model=st.sampled_from(["mock-1", "mock-2"]), prompt=prompts, user=st.sampled_from(["alice", "bob"]),
           extra=semantic_headers, stream=st.booleans(), fb=feedback)
    def run(model, prompt, user, extra, stream, fb):
        body = json.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]})
        base = [("content-type", "application/json"), ("authorization", f"Bearer {CONFIG_KEY}"),
                ("x-flaregate-end-user", user)]
        rig.run(Request("POST", "/v1/chat/completions", Headers(base + extra), body.encode()))
        admin = Headers([("content-type", "application/json"), ("authorization", f"Bearer {ADMIN_KEY}")])
        rig.run(Request("POST", "/admin/cache/feedback", admin, fb))

    run()
    assert not errors.records

    # Probing another user's answers through a paraphrase: alice's answer never reaches bob.
    async def ask(user: str, text: str) -> tuple[str, bytes]:
        hs = Headers([("content-type", "application/json"), ("authorization", f"Bearer {CONFIG_KEY}"),
                      ("x-flaregate-end-user", user)])
        body = json.dumps({"model": "mock-2", "messages": [{"role": "user", "content": text}]}).encode()
        response = await rig.secure.gateway.handle(Request("POST", "/v1/chat/completions", hs, body))
        await rig.secure.tasks.drain()
        assert isinstance(response.body, bytes)
        return response.headers.get("cache-status", ""), response.body

    rig.loop.run_until_complete(ask("alice", "my secret account number please"))
    status, _ = rig.loop.run_until_complete(ask("alice", "my secret account number please now"))
    assert "detail=semantic" in status  # the paraphrase hits for the same user...
    status, _ = rig.loop.run_until_complete(ask("bob", "my secret account number please now"))
    assert "hit" not in status  # ...and never for another
    storage.close()
