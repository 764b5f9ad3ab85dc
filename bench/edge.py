"""``python -m bench.edge``: CPU per request of the Worker in workerd (``wrangler dev``, offline runtime).

workerd's timers are coarse, so latency says little; what Cloudflare bills is CPU. For each
scenario this sends N sequential requests and charges the utime+stime that the workerd
processes (the children of ``wrangler dev``) gained over them, divided by N. Scenarios are run
in rotating order for ``--rounds`` rounds; the figure is the median over rounds. The same mock
upstream as the local bench answers every chat.

Needs ``source scripts/env.sh; ensure_node; ensure_wrangler; ensure_edge_runtime`` (which sets
MINIFLARE_WORKERD_PATH). Portkey's gateway as a Worker is not run: its npm package ships the
Node build only (``build/start-server.js``), not the ``src/index.ts`` Worker entry, and there is
no network here to fetch its source; see README "Performance".
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .procs import Server, cpu_seconds, free_port, process_tree

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
from tests.support import wrangler_dev  # noqa: E402  (the tests' way to start the Worker)

GATEWAY_KEY = "fg-bench-gateway-key"
UPSTREAM_KEY = "sk-bench-upstream"
CHAT = "/v1/chat/completions"
ADMIN_KEY = "fg-bench-admin-key"
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}", "Content-Type": "application/json"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}  # /metrics is an operator endpoint


def _chat(content: str, stream: bool = False) -> bytes:
    return json.dumps({"model": "bench-model", "stream": stream,
                       "messages": [{"role": "user", "content": content}]}).encode()


# scenario id -> (server, method, path, body factory or None, expected status)
Scenario = tuple[str, str, str, Callable[[], bytes] | None, int]
SCENARIOS: dict[str, Scenario] = {
    "models": ("fg", "GET", "/v1/models", None, 200),
    "miss": ("fg", "POST", CHAT, lambda: _chat(f"bench {uuid.uuid4().hex}"), 200),
    "hit": ("fg", "POST", CHAT, lambda: _chat("bench the same prompt"), 200),
    "stream": ("fg", "POST", CHAT, lambda: _chat(f"bench {uuid.uuid4().hex}", stream=True), 200),
    "429": ("fg429", "POST", CHAT, lambda: _chat(f"bench {uuid.uuid4().hex}"), 429),
    # The request log with LOG_BODIES=both, and the exporters with their targets down (issue 16).
    "miss_bodies": ("fgbodies", "POST", CHAT, lambda: _chat(f"bench {uuid.uuid4().hex}"), 200),
    "miss_export_down": ("fgexport", "POST", CHAT, lambda: _chat(f"bench {uuid.uuid4().hex}"), 200),
    "health": ("fg", "GET", "/health", None, 200),
    "metrics": ("fg", "GET", "/metrics", None, 200),
}


def _worker_env(mock_url: str, **extra: str) -> dict[str, str]:
    providers = [{"name": "mock-upstream", "kind": "openai", "base_url": mock_url + "/v1",
                  "api_key_env": "BENCH_UPSTREAM_API_KEY"}]
    return {"FLAREGATE_API_KEYS": GATEWAY_KEY, "BENCH_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "FLAREGATE_PROVIDERS": json.dumps(providers),
            "FLAREGATE_ROUTES": json.dumps({"bench-model": ["mock-upstream"]}),
            "RATE_LIMIT_CAPACITY": "1000000000", "RATE_LIMIT_REFILL_PER_SECOND": "1000000000",
            "FLAREGATE_ADMIN_KEY": ADMIN_KEY, **extra}


def _start_worker(name: str, work: Path, env: dict[str, str]) -> wrangler_dev.DevServer:
    data = work / name
    data.mkdir(parents=True)
    env_file = wrangler_dev.write_env_file(data / "bench.env", env)
    command = wrangler_dev.wrangler_command(free_port(), free_port(), data / "state", env_file)
    return wrangler_dev.start(command, log_path=data / "wrangler.log", ready_timeout=180)


def _workerd_pids(dev: wrangler_dev.DevServer) -> list[int]:
    pids = []
    for pid in process_tree(dev.process.pid):
        try:
            if "workerd" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                pids.append(pid)
        except OSError:
            pass
    return pids


def _request(base_url: str, method: str, path: str, body: bytes | None) -> int:
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body, headers=ADMIN if path == "/metrics" else AUTH)
        response = conn.getresponse()
        response.read()  # a stream is read to its end
        return response.status
    finally:
        conn.close()


def measure(dev: wrangler_dev.DevServer, scenario: Scenario, n: int) -> dict[str, Any]:
    _, method, path, body, expect = scenario
    for _ in range(3):  # warm: the isolate, the route, the cache entry for "hit"
        _request(dev.base_url, method, path, body() if body else None)
    pids = _workerd_pids(dev)
    before, started = cpu_seconds(pids), time.perf_counter()
    statuses: dict[int, int] = {}
    for _ in range(n):
        status = _request(dev.base_url, method, path, body() if body else None)
        statuses[status] = statuses.get(status, 0) + 1
    wall = time.perf_counter() - started
    cpu = cpu_seconds(pids) - before
    return {"cpu_ms_per_request": cpu * 1000 / n, "wall_ms_per_request": wall * 1000 / n,
            "statuses": statuses, "ok": statuses.get(expect, 0) == n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=60, help="requests per scenario per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="scenarios to run")
    parser.add_argument("--label", default="edge", help="name of this run in the output file")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    python = REPO / ".venv" / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="fg-bench-edge-") as tmp:
        work = Path(tmp)
        mock_port = free_port()
        mock = Server("mock", [str(python), str(REPO / "tests" / "support" / "mock_upstream.py"),
                               "--port", str(mock_port), "--fixed"], dict(os.environ), mock_port, "/v1/models", work)
        mock.start()
        workers: dict[str, wrangler_dev.DevServer] = {}
        try:
            workers["fg"] = _start_worker("fg", work, _worker_env(mock.base_url))
            if "429" in names:
                workers["fg429"] = _start_worker("fg429", work, _worker_env(
                    mock.base_url, RATE_LIMIT_CAPACITY="1", RATE_LIMIT_REFILL_PER_SECOND="0.0001"))
            if "miss_bodies" in names:
                workers["fgbodies"] = _start_worker("fgbodies", work, _worker_env(mock.base_url, LOG_BODIES="both"))
            if "miss_export_down" in names:
                dead = f"http://127.0.0.1:{free_port()}"
                workers["fgexport"] = _start_worker("fgexport", work, _worker_env(
                    mock.base_url, OTEL_EXPORTER_OTLP_ENDPOINT=dead, DD_API_KEY="bench", DATADOG_API_URL=dead))
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            for r in range(args.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    scenario = SCENARIOS[name]
                    result = measure(workers[scenario[0]], scenario, args.n)
                    rounds[name].append(result)
                    print(f"round {r + 1} {name:8} {result['cpu_ms_per_request']:7.2f} ms CPU/request"
                          f"  {result['statuses']}", flush=True)
        finally:
            for dev in workers.values():
                wrangler_dev.stop(dev.process)
            mock.stop()
    summary = {name: {"cpu_ms_median": statistics.median(x["cpu_ms_per_request"] for x in runs),
                      "cpu_ms_rounds": [round(x["cpu_ms_per_request"], 3) for x in runs],
                      "all_ok": all(x["ok"] for x in runs)} for name, runs in rounds.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"edge-{args.label}.json"
    path.write_text(json.dumps({"label": args.label, "n": args.n, "rounds": args.rounds,
                                "scenarios": summary}, indent=2) + "\n")
    print(f"\n| {args.label}: ms CPU per request (median of {args.rounds}) | |\n|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['cpu_ms_median']:.2f}{'' if s['all_ok'] else ' (unexpected statuses)'} |")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
