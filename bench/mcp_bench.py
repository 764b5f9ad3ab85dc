"""``tools/call`` through the MCP gateway against the same MCP server called directly, and
``tools/list`` over three servers of 50 tools each (provisional: timing figures on a shared
machine; the counts are real).

Starts three MCP servers (the official SDK's ``MCPServer``, tests/support/mcp_server.py,
JSON answers) and the gateway in front of them, opens one session each way over one
keep-alive connection, and sends ``tools/call add`` N times to each, interleaved. Prints the
client-observed p50/p99 of both, the p50 the gateway adds, the gateway process's CPU per
call (from /proc, the whole process: parsing, auth, limits, the upstream exchange, the
record), then lists the tools N times and prints how many ``tools/list`` requests reached
the servers (one per server per ``MCP_LIST_CACHE_SECONDS``).

    .venv/bin/python bench/mcp_bench.py [--calls 300] [--sessionless]

``--sessionless``: the gateway is spoken to in the 2026-07-28 revision (no session, the
envelope and routing headers on every request; the gateway's upstream session pooled).

With ``FLAREGATE_TARGET=edge`` the gateway is the Worker under ``wrangler dev`` (CPU per
call is then the workerd process's). Not part of the test suite: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.conftest import GATEWAY_KEY, TARGET, run_gateway, upstream_env  # noqa: E402
from tests.support.mcp_server import McpServerProcess  # noqa: E402
from tests.support.mock_upstream import MockUpstreamProcess  # noqa: E402

from bench.procs import cpu_seconds, process_tree  # noqa: E402

ACCEPT = "application/json, text/event-stream"
MODERN = "2026-07-28"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}}


def _initialize(client: httpx.Client, url: str, headers: dict[str, str]) -> dict[str, str]:
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
    response = client.post(url, json=init, headers=headers)
    response.raise_for_status()
    session = {**headers, "mcp-protocol-version": "2025-11-25"}
    if response.headers.get("mcp-session-id"):
        session["mcp-session-id"] = response.headers["mcp-session-id"]
    client.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
    return session


def _call(client: httpx.Client, url: str, headers: dict[str, str], i: int) -> float:
    message = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "add", "arguments": {"a": i, "b": 1}}}
    if "authorization" in headers:
        message["params"]["name"] = "s0.add"
    if headers.get("mcp-protocol-version") == MODERN:
        message["params"]["_meta"] = ENVELOPE
        headers = {**headers, "mcp-method": "tools/call", "mcp-name": "s0.add"}
    started = time.perf_counter()
    response = client.post(url, json=message, headers=headers)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and str(i + 1) in response.text, response.text
    return elapsed * 1000


def _gateway_pids(root: int) -> list[int]:
    """The gateway's processes: on the edge only workerd's (as bench.edge charges a Worker:
    not wrangler's node process in front of it)."""
    tree = process_tree(root)
    if TARGET != "edge":
        return tree
    return [pid for pid in tree if "workerd" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--sessionless", action="store_true", help="the 2026-07-28 revision to the gateway")
    args = parser.parse_args()
    servers = [McpServerProcess(f"s{i}", "", "--tools", "46", "--json-response") for i in range(3)]
    for server in servers:
        server.start()
    try:
        with MockUpstreamProcess() as mock, tempfile.TemporaryDirectory() as tmp:
            config = [{"name": s.name, "url": s.url} for s in servers]
            env = upstream_env(mock.base_url, FLAREGATE_MCP_SERVERS=json.dumps(config), RATE_LIMIT_CAPACITY="1000000",
                               RATE_LIMIT_REFILL_PER_SECOND="100000", FLAREGATE_MCP_SESSION_SECRET="bench-secret-0123456789",
                               MCP_LIST_CACHE_SECONDS="30")
            with run_gateway(Path(tmp), env) as gateway, httpx.Client(timeout=30) as client:
                base = {"accept": ACCEPT, "content-type": "application/json"}
                direct = _initialize(client, servers[0].url, base)
                keyed = {**base, "authorization": f"Bearer {GATEWAY_KEY}"}
                through = ({**keyed, "mcp-protocol-version": MODERN} if args.sessionless
                           else _initialize(client, gateway.base_url + "/mcp", keyed))
                for i in range(20):  # warm both paths
                    _call(client, servers[0].url, direct, i)
                    _call(client, gateway.base_url + "/mcp", through, i)
                pids = _gateway_pids(gateway.process.pid)
                direct_ms, gateway_ms, gateway_cpu = [], [], 0.0
                for i in range(args.calls):
                    direct_ms.append(_call(client, servers[0].url, direct, i))
                    before = cpu_seconds(pids)
                    gateway_ms.append(_call(client, gateway.base_url + "/mcp", through, i))
                    gateway_cpu += cpu_seconds(pids) - before
                print(f"tools/call, {args.calls} each{' (2026-07-28, sessionless)' if args.sessionless else ''}"
                      " (provisional timing):")
                print(f"  direct   p50 {statistics.median(direct_ms):7.2f} ms  p99 {_pct(direct_ms, 0.99):7.2f} ms")
                print(f"  gateway  p50 {statistics.median(gateway_ms):7.2f} ms  p99 {_pct(gateway_ms, 0.99):7.2f} ms")
                print(f"  added    p50 {statistics.median(gateway_ms) - statistics.median(direct_ms):7.2f} ms")
                print(f"  gateway CPU per call {gateway_cpu / args.calls * 1000:.2f} ms "
                      f"({'workerd' if TARGET == 'edge' else 'the server'} processes, /proc)")
                before_lists = [httpx.get(f"http://127.0.0.1:{s.port}/stats").json()["requests"] for s in servers]
                list_ms = []
                for i in range(args.calls):
                    started = time.perf_counter()
                    listed = client.post(gateway.base_url + "/mcp", headers={**through, "mcp-method": "tools/list"},
                                         json={"jsonrpc": "2.0", "id": 10_000 + i, "method": "tools/list",
                                               "params": {"_meta": ENVELOPE} if args.sessionless else {}})
                    list_ms.append((time.perf_counter() - started) * 1000)
                tools = len(listed.json()["result"]["tools"])
                after_lists = [httpx.get(f"http://127.0.0.1:{s.port}/stats").json()["requests"] for s in servers]
                upstream = sum(a - b for a, b in zip(after_lists, before_lists, strict=True))
                print(f"tools/list, {args.calls} lists of {tools} tools over 3 servers: p50 "
                      f"{statistics.median(list_ms):.2f} ms; requests that reached the servers: {upstream}")
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
