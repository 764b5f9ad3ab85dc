"""``python -m bench`` (or ``bench/run``): gateway overhead, measured side by side with peers.

Starts the mock upstream (fixed ~600-byte completion, 20-chunk stream), Flaregate's
standalone server (one for the normal paths, one with a one-request bucket for the 429
path) and, unless ``--quick``/``--no-peers``, LiteLLM's proxy and Portkey's gateway. Then,
for each repeat, each connection count and each target in a rotating order, it drives load
with wrk (streams: the raw-socket client in ``stream_client.py``) and reads the server's
CPU from /proc. Results: ``bench/results/latest.{json,md,png}`` (``quick.*`` for --quick).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import summary
from .peers import UPSTREAM_KEY, Peer, litellm_peer, portkey_peer
from .procs import Server, free_port, machine_busy_seconds, own_cpu_seconds
from .stream_client import measure_streams

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LUA = BENCH / "bench.lua"
GATEWAY_KEY = "fg-bench-gateway-key"
CHAT = "/v1/chat/completions"


@dataclass
class Target:
    id: str
    label: str
    server: str  # the process whose CPU is charged to this target
    kind: str  # "wrk" or "stream"
    mode: str  # wrk body mode: unique | fixed
    headers: dict[str, str]
    baseline: str | None
    expect: int = 200
    note: str = ""
    port: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "server": self.server, "kind": self.kind,
                "baseline": self.baseline, "expect_status": self.expect, "note": self.note}


# -- setup ------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    if shutil.which("wrk") is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            print("wrk is missing: installing Debian's wrk with apt-get ...", flush=True)
            subprocess.run(["apt-get", "update", "-qq"], check=False)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
        if shutil.which("wrk") is None:
            sys.exit("bench: the load generator `wrk` is not installed. Install it "
                     "(Debian/Ubuntu: `sudo apt-get install wrk`, macOS: `brew install wrk`) and rerun.")
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    first = (out.stdout or out.stderr).splitlines()[0].split()  # "wrk debian/4.1.0-3+b2 [epoll] ..."
    return first[1] if len(first) > 1 else "unknown"


def gateway_python() -> Path:
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        print("Installing the gateway into .venv (scripts/bootstrap local) ...", flush=True)
        subprocess.run([str(REPO / "scripts" / "bootstrap"), "local"], check=True)
    return python


def package_versions(python: Path, names: list[str]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            f"for n in {names!r}:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\n"
            "out['python'] = sys.version.split()[0]\n"
            "print(json.dumps(out))")
    return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout)


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "loadavg_at_start": os.getloadavg()}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not (k.startswith(("FLAREGATE_", "RATE_LIMIT", "CACHE_")) or k.endswith("_API_KEY"))}


def mock_server(python: Path, work: Path) -> Server:
    """The fast mock upstream, every chat answered with the fixed benchmark reply."""
    port = free_port()
    return Server("mock", [str(python), str(REPO / "tests" / "support" / "mock_upstream.py"),
                           "--port", str(port), "--fixed"], clean_env(), port, "/v1/models", work)


def flaregate_server(name: str, python: Path, mock_url: str, work: Path, **extra: str) -> Server:
    port = free_port()
    providers = [{"name": "mock-upstream", "kind": "openai", "base_url": mock_url + "/v1",
                  "api_key_env": "BENCH_UPSTREAM_API_KEY"}]
    env = {**clean_env(), "FLAREGATE_API_KEYS": GATEWAY_KEY, "BENCH_UPSTREAM_API_KEY": UPSTREAM_KEY,
           "FLAREGATE_PROVIDERS": json.dumps(providers),
           "FLAREGATE_ROUTES": json.dumps({"bench-model": ["mock-upstream"]}),
           "RATE_LIMIT_CAPACITY": "1000000000", "RATE_LIMIT_REFILL_PER_SECOND": "1000000000", **extra}
    cmd = [str(python), "-m", "flaregate", "serve", "--port", str(port),
           "--data-dir", str(work / name)]
    return Server(name, cmd, env, port, "/health", work, cwd=work)


# -- one request, to check each target does what it claims ----------------------------------------


def probe(port: int, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", CHAT, json.dumps(body), {"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def preflight(target: Target) -> str | None:
    """None when the target answers as expected, else why not."""
    text = f"preflight {uuid.uuid4().hex}"
    body: dict[str, Any] = {"model": "bench-model", "messages": [{"role": "user", "content": text}]}
    if target.kind == "stream":
        body["stream"] = True
    try:
        if target.mode == "fixed":  # the exact body wrk will send, stored in the cache first
            body["messages"][0]["content"] = "Benchmark prompt"
            probe(target.port, target.headers, body)
        if target.expect == 429:  # the one-request bucket: its request goes first
            probe(target.port, target.headers, body)
        status, headers, raw = probe(target.port, target.headers, body)
    except OSError as exc:
        return f"no answer: {exc}"
    if status != target.expect:
        return f"answered {status}, expected {target.expect}: {raw[:300]!r}"
    if target.kind == "stream" and b"[DONE]" not in raw:
        return "stream did not end with [DONE]"
    if target.expect == 200 and target.kind == "wrk" and b'"usage"' not in raw:
        return f"no completion in the answer: {raw[:300]!r}"
    want = {"miss": "MISS", "hit": "HIT"}.get(target.id.rsplit("-", 1)[-1]) if target.server.startswith("flaregate") else None
    if want and headers.get("x-flaregate-cache") != want:
        return f"x-flaregate-cache is {headers.get('x-flaregate-cache')!r}, expected {want}"
    return None


# -- measuring ------------------------------------------------------------------------------------


def run_wrk(target: Target, connections: int, seconds: float, run_id: str) -> dict[str, Any]:
    header_args = [f"{k}: {v}" for k, v in target.headers.items()]
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(LUA),
           f"http://127.0.0.1:{target.port}{CHAT}", "--", target.mode, run_id, *header_args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result (rc={out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    raw = json.loads(line.split(" ", 1)[1])
    duration = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"], "rps": raw["requests"] / duration if duration else None,
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000, "non_2xx": raw["non_2xx"],
        "socket_errors": raw["socket_errors"] + raw["timeouts"],
        "curve": [[q, us / 1000] for q, us in raw["curve_us"]],
    }


def run_stream(target: Target, connections: int, seconds: float, run_id: str) -> dict[str, Any]:
    result = measure_streams("127.0.0.1", target.port, CHAT, target.headers, connections, seconds, run_id)
    total = sorted(result.total)
    curve = [[q, summary.percentile(total, q) * 1000] for q in
             (1, 5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 97.5, 99, 99.5, 99.9)] if total else []
    ttfb = summary.latency_summary(result.ttfb, "ttfb_")
    return {
        "requests": len(total) + result.non_2xx + result.incomplete,
        "rps": len(total) / result.elapsed if result.elapsed else None,
        **summary.latency_summary(total), "ttfb_p50_ms": ttfb["ttfb_p50_ms"], "ttfb_p99_ms": ttfb["ttfb_p99_ms"],
        "max_ms": total[-1] * 1000 if total else None, "non_2xx": result.non_2xx + result.incomplete,
        "socket_errors": result.errors, "curve": curve,
    }


def measure(target: Target, server: Server, connections: int, seconds: float, run_id: str,
            servers: list[Server] = ()) -> dict[str, Any]:
    """One run. Besides the target's own figures it records how busy the machine was with
    work that is not ours (other users of the shared cores), which makes runs noisy."""
    ours = [s.cpu_seconds() for s in servers]
    before, busy, own, started = server.cpu_seconds(), machine_busy_seconds(), own_cpu_seconds(), time.monotonic()
    record = (run_stream if target.kind == "stream" else run_wrk)(target, connections, seconds, run_id)
    cpu = server.cpu_seconds() - before
    elapsed = time.monotonic() - started
    mine = own_cpu_seconds() - own + sum(s.cpu_seconds() - b for s, b in zip(servers, ours, strict=True))
    record.update(target=target.id, connections=connections, cpu_s=cpu,
                  cpu_s_per_1k=summary.cpu_per_1k(cpu, record["requests"]),
                  others_cores=max(0.0, (machine_busy_seconds() - busy - mine) / elapsed))
    return record


# -- the run --------------------------------------------------------------------------------------


def flaregate_targets(prefix: str, name: str, fg: Server, fg429: Server, server: str) -> list[Target]:
    gateway = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    return [
        Target(f"{prefix}-miss", f"{name}, cache miss", server, "wrk", "unique", gateway, "direct", port=fg.port,
               note="a new prompt per request: cache lookup, upstream call, cache store"),
        Target(f"{prefix}-hit", f"{name}, cache hit", server, "wrk", "fixed", gateway, "direct", port=fg.port,
               note="the same prompt every time: answered from the cache"),
        Target(f"{prefix}-429", f"{name}, 429 rejected", server + "-429", "wrk", "unique", gateway, "direct",
               expect=429, port=fg429.port, note="a one-request bucket: every request is refused by the limiter"),
        Target(f"{prefix}-stream", f"{name}, stream", server, "stream", "unique", gateway, "direct-stream",
               port=fg.port, note="SSE relayed chunk by chunk"),
    ]


def build_targets(mock: Server, gateways: list[tuple[str, str, Server, Server]], peers: list[Peer]) -> list[Target]:
    """``gateways``: (id prefix, label, server, 429 server) per Flaregate build under test."""
    upstream = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
    targets = [
        Target("direct", "direct → mock", "mock", "wrk", "unique", upstream, None, port=mock.port,
               note="the baseline: wrk straight to the mock upstream"),
        Target("direct-stream", "direct → mock, stream", "mock", "stream", "unique", upstream, None,
               port=mock.port, note="the streaming baseline: 20 content chunks, then [DONE]"),
    ]
    for prefix, name, fg, fg429 in gateways:
        targets += flaregate_targets(prefix, name, fg, fg429, fg.name)
    for peer in peers:
        if peer.server is None:
            continue
        name = {"litellm": "LiteLLM", "portkey": "Portkey"}[peer.name]
        targets.append(Target(f"{peer.name}-miss", f"{name} {peer.version}", peer.name, "wrk", "unique",
                              peer.headers, "direct", port=peer.server.port,
                              note=f"{name}'s proxy, no cache, to the same mock"))
        targets.append(Target(f"{peer.name}-stream", f"{name} {peer.version}, stream", peer.name, "stream",
                              "unique", peer.headers, "direct-stream", port=peer.server.port))
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, no peers (~2 min), for iteration")
    parser.add_argument("--no-peers", action="store_true", help="skip LiteLLM and Portkey")
    parser.add_argument("--duration", type=float, help="seconds per measurement (default 5, quick 2)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per measurement; the median is reported")
    parser.add_argument("--connections", default="1,16", help="comma-separated connection counts")
    parser.add_argument("--only", help="comma-separated target ids to run (e.g. direct,fg-miss)")
    parser.add_argument("--out", help="output path prefix (default bench/results/latest, quick: .../quick)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs and data")
    parser.add_argument("--compare", metavar="PYTHON",
                        help="also measure the Flaregate installed for this interpreter (e.g. another checkout's "
                             ".venv/bin/python), interleaved with this one: targets cmp-*")
    args = parser.parse_args(argv)

    seconds = args.duration or (2.0 if args.quick else 5.0)
    warmup = 1.0 if args.quick else 2.0
    connections = [int(c) for c in args.connections.split(",")]
    want_peers = not (args.quick or args.no_peers)
    out = Path(args.out) if args.out else BENCH / "results" / ("quick" if args.quick else "latest")
    started = time.time()
    host = machine()

    wrk_version = ensure_wrk()
    python = gateway_python()
    versions = {"wrk": wrk_version,
                **{f"gateway {k}": v for k, v in package_versions(
                    python, ["flaregate", "uvicorn", "uvloop", "httptools", "httpx", "aiohttp", "pydantic"]).items()}}
    work = Path(tempfile.mkdtemp(prefix="flaregate-bench-"))
    servers: list[Server] = []
    peers: list[Peer] = []
    try:
        mock = mock_server(python, work)
        mock.start()
        servers.append(mock)
        builds = [("fg", "Flaregate", "flaregate", python)]
        if args.compare:
            builds.append(("cmp", "Flaregate (compared build)", "flaregate-cmp", Path(args.compare)))
        gateways = []
        for prefix, name, server_name, interpreter in builds:
            fg = flaregate_server(server_name, interpreter, mock.base_url, work)
            fg429 = flaregate_server(server_name + "-429", interpreter, mock.base_url, work,
                                     RATE_LIMIT_CAPACITY="1", RATE_LIMIT_REFILL_PER_SECOND="0.0001")
            for server in (fg, fg429):
                server.start()
                servers.append(server)
            gateways.append((prefix, name, fg, fg429))
        if args.compare:
            versions["compared build"] = f"{args.compare} " + package_versions(Path(args.compare), ["flaregate"]).get(
                "flaregate", "?")
        if want_peers:
            print("Peers:", flush=True)
            for make in (litellm_peer, portkey_peer):
                peer = make(mock.base_url, work)
                if peer.server is not None:
                    try:
                        peer.server.start(timeout=120)
                        servers.append(peer.server)
                    except RuntimeError as exc:
                        peer.skipped, peer.server = f"did not start: {exc}", None
                print(f"  {peer.name}: " + (f"version {peer.version}" if peer.skipped is None
                                              else f"SKIPPED — {peer.skipped}"), flush=True)
                if peer.version:
                    versions[peer.name] = peer.version
                peers.append(peer)
        by_name = {s.name: s for s in servers}
        targets = build_targets(mock, gateways, peers)
        targets.sort(key=lambda t: t.kind == "stream")  # whole responses first, streams after
        if args.only:
            keep = set(args.only.split(","))
            targets = [t for t in targets if t.id in keep]
        for target in list(targets):
            problem = preflight(target)
            if problem:
                print(f"  {target.id}: dropped, {problem}", flush=True)
                peer = next((p for p in peers if target.id.startswith(p.name + "-")), None)
                if peer is not None:
                    peer.dropped.append(f"{target.id}: {problem}")
                targets.remove(target)

        total_runs = len(targets) * len(connections) * args.repeats
        print(f"Measuring {len(targets)} targets × {len(connections)} connection counts × {args.repeats} repeats"
              f" × {seconds:g}s (~{(total_runs * (seconds + 0.5) + len(targets) * warmup) / 60:.1f} min)", flush=True)
        for target in targets:  # warm pools, JITs and caches; not recorded
            measure(target, by_name[target.server], max(connections), warmup, "warmup-" + uuid.uuid4().hex[:8], servers)
        runs: list[dict[str, Any]] = []
        for repeat in range(args.repeats):
            order = targets[repeat % len(targets):] + targets[:repeat % len(targets)]  # rotate: interleave
            for conns in connections:
                for target in order:
                    record = measure(target, by_name[target.server], conns, seconds, uuid.uuid4().hex[:12], servers)
                    record["repeat"] = repeat
                    runs.append(record)
                    print(f"  [{repeat + 1}/{args.repeats}] {target.id:<16} c={conns:<3} p50 {summary.fmt(record['p50_ms'])} ms"
                          f"  p99 {summary.fmt(record['p99_ms'])} ms  {summary.fmt(record['rps'], 0)} req/s"
                          f"  non-2xx {record['non_2xx']}  errors {record['socket_errors']}"
                          f"  others {record['others_cores']:.2f} cores", flush=True)
                    time.sleep(0.2)
        rss = {s.name: round(s.peak_rss_mb(), 1) for s in servers}
        node = next((p.setup.split("on Node ")[1].split(",")[0] for p in peers
                     if p.name == "portkey" and "on Node " in p.setup), None)
        if node:
            versions["node"] = node
    finally:
        for server in reversed(servers):
            server.stop()
        if args.keep_logs:
            print(f"Logs and data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    rows = summary.summarise(runs, [t.public() for t in targets], connections)
    checks = summary.target_checks(rows)
    report = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "bench/run" + (" --quick" if args.quick else "") + (" --no-peers" if args.no_peers else ""),
        "wall_seconds": round(time.time() - started, 1),
        "machine": {**host, "loadavg_at_end": os.getloadavg(), **background(runs)},
        "versions": versions,
        "settings": {"seconds": seconds, "warmup_seconds": warmup, "repeats": args.repeats,
                     "connections": connections, "wrk_threads": 1},
        "method": method_text(seconds, args.repeats, connections),
        "targets": [t.public() for t in targets],
        "peers": {p.name: {"version": p.version, "skipped": p.skipped, "dropped": p.dropped, "setup": p.setup}
                  for p in peers},
        "peak_rss_mb": rss,
        "results": rows,
        "checks": checks,
        "runs": runs,
    }
    write_outputs(report, out)
    return 0


def background(runs: list[dict[str, Any]]) -> dict[str, float]:
    """How many cores other processes (not wrk, the servers or this driver) kept busy."""
    values = sorted(r["others_cores"] for r in runs)
    if not values:
        return {}
    return {"others_cores_median": round(values[len(values) // 2], 2), "others_cores_max": round(values[-1], 2)}


def method_text(seconds: float, repeats: int, connections: list[int]) -> str:
    return (
        f"One machine, loopback only. wrk (1 thread, keep-alive) drives each target for {seconds:g}s at "
        f"{' and '.join(map(str, connections))} connections; every target is measured {repeats} times in a "
        "rotating interleaved order and each figure is the median of the repeats. Bodies are OpenAI chat "
        "requests; 'cache miss' bodies differ per request, 'cache hit' bodies are identical. The mock upstream "
        "answers every chat with a fixed ~600-byte completion with usage, or 20 SSE content chunks then "
        "[DONE]. Streams are measured by a raw-socket asyncio client: TTFB = first body byte, total = the "
        "[DONE] event. Overhead = target minus the direct-to-mock baseline at the same percentile and "
        "connection count; ratio = target / baseline. CPU = utime+stime of the server's process tree from "
        "/proc during the run, per 1000 requests; peak RSS = VmHWM at the end. wrk, the mock, the gateway "
        "and any peer share the machine's cores."
    )


def write_outputs(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = render_markdown(report)
    out.with_suffix(".md").write_text(md)
    print("\n" + md)
    try:
        from .chart import render_chart

        render_chart(report, out.with_suffix(".png"))
        print(f"Chart: {out.with_suffix('.png')}")
    except ImportError as exc:
        print(f"(no chart: {exc}; bench/run installs matplotlib into bench/.venv)")
    print(f"Results: {out.with_suffix('.json')}, {out.with_suffix('.md')}")


def render_markdown(report: dict[str, Any]) -> str:
    servers = {t["id"]: t["server"] for t in report["targets"]}
    m, v = report["machine"], report["versions"]
    lines = [
        f"Run {report['generated_at']} with `{report['command']}` ({report['wall_seconds'] / 60:.1f} min) on "
        f"{m['cores']} × {m['cpu']}, load average at start {m['loadavg_at_start'][0]:.2f}. "
        f"Other processes on the machine kept a median of {m.get('others_cores_median', 0):.2f} cores "
        f"(at most {m.get('others_cores_max', 0):.2f}) busy during the measurements.",
        "",
        summary.render_table(report["results"], report["peak_rss_mb"], servers),
        summary.render_checks(report["checks"]),
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        "",
    ]
    for name, peer in report["peers"].items():
        text = peer["setup"] if not peer["skipped"] else f"not measured — {peer['skipped']}"
        lines.append(f"- {name}: {text}" + "".join(f"; dropped {d}" for d in peer.get("dropped", [])))
    lines += ["", "Method: " + report["method"], ""]
    return "\n".join(lines)
