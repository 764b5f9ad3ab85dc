"""``python -m bench.edge``: CPU per request of Workers in workerd (``wrangler dev``, offline runtime).

workerd's timers are coarse, so latency says little; what Cloudflare bills is CPU. For each
target and scenario this sends N sequential requests and charges the utime+stime that the
target's workerd processes (the children of its ``wrangler dev``) gained over them, divided
by N. Targets and scenarios run interleaved, in rotating order, for ``--rounds`` rounds; the
figure is the median over rounds. The same mock upstream answers every chat.

Targets, all in the same run:
  ``flaregate``  this tree's Worker (every scenario)
  ``before``     another checkout's Worker (``--before DIR``, e.g. a worktree of main; repeatable as
                 ``--before NAME=DIR`` to run several older checkouts in the same run)
  ``floor``      ``bench/edge_floor``: a Python Worker that only forwards the body to the mock
  ``floor-js``   ``bench/edge_floor_js``: the same bare proxy in JavaScript, so ``floor`` minus it is
                 Pyodide's own per-request price and ``floor-js`` is what wrangler dev's workerd
                 spends on any proxied request (its entry worker, the fetch, the socket)
  ``NAME``       ``--variant NAME:VAR=VALUE;...``: this tree's Worker with extra variables, to
                 bisect by switching parts off (e.g. ``--variant warn:LOG_LEVEL=warn``)
  ``semantic``   ``--semantic-fill N``: this tree's Worker with the semantic cache on for the bench
                 route (embeddings from the mock's bag-of-words route), its partition filled with N
                 answered prompts before measuring: ``miss`` minus the ``flaregate`` target's is
                 what the semantic cache adds to a miss (embed, one SemanticIndex object call, the
                 indexing after the answer)
  ``NAME``       ``--floor NAME:py|js:OPS``: a floor with runtime operations added (``FLOOR_OPS``, listed in
                 bench/edge_floor/entry.py), to price each one
  ``portkey``    Portkey's gateway as a Worker (``src/index.ts``) from ``bench/.peers/portkey-worker``:
                 prepare it with ``--setup-portkey --portkey-source DIR`` (source from a git mirror of
                 Portkey-AI/gateway, npm deps from the registry); skipped, with the reason, without it
Portkey answers the chat scenarios (miss, stream) only; the floors answer those and the two
plain GETs (models, health) with a bare "ok", which prices a request that does no I/O.

Needs ``source scripts/env.sh; ensure_node; ensure_wrangler; ensure_edge_runtime`` (which sets
MINIFLARE_WORKERD_PATH).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import Server, cpu_seconds, free_port, process_tree

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
from tests.support import wrangler_dev  # noqa: E402  (the tests' way to start the Worker)

GATEWAY_KEY = "fg-bench-gateway-key-7c1e9a40b2d35f68"  # long enough for the production variant
UPSTREAM_KEY = "sk-bench-upstream"
CHAT = "/v1/chat/completions"
ADMIN_KEY = "fga-bench-admin-key-3f9d0b6e1a7c4285"
SIGNING_SECRET = "bench-signing-secret-5e2a8c71d9f04b36"  # production refuses the admin key as one
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}", "Content-Type": "application/json"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}  # /metrics is an operator endpoint
FLOOR_DIR = BENCH / "edge_floor"
FLOOR_JS_DIR = BENCH / "edge_floor_js"
PORTKEY_DIR = BENCH / ".peers" / "portkey-worker"
# A git checkout (or bare mirror) of Portkey-AI/gateway: --portkey-source DIR or PORTKEY_MIRROR.
PORTKEY_MIRROR_VAR = "PORTKEY_MIRROR"
PORTKEY_PATHS = ["src", "plugins", "wrangler.toml", "package.json", "package-lock.json", "tsconfig.json",
                 "conf.json", "initializeSettings.ts", "patches"]
IDLE_SECONDS = 2.0
# The 429 Workers' bucket, with the default (adaptive) lease, as users deploy it: the isolate
# repeats the object's refusal until its retry-after, so most 429s make no object call. A
# variant's fixed lease is dropped (a lease over a bucket of one is a configuration error).
ONE_REQUEST_BUCKET = {"RATE_LIMIT_CAPACITY": "1", "RATE_LIMIT_REFILL_PER_SECOND": "0.0001", "RATE_LIMIT_LEASE": ""}


# The semantic target's routes: the bench route with its semantic cache on (bench/semantic_bench.py
# measures the same lookup in process).
SEMANTIC_ROUTES = {"bench-model": {"targets": ["mock-upstream"], "semantic_cache": {
    "threshold": 0.8, "embeddings": "bow-embed", "max_entries": 100_000}}, "bow-embed": ["mock-upstream/bow-embed"]}


def _chat(content: str, stream: bool = False) -> bytes:
    return json.dumps({"model": "bench-model", "stream": stream,
                       "messages": [{"role": "user", "content": content}]}).encode()


@dataclass(frozen=True)
class Scenario:
    method: str
    path: str
    body: Callable[[], bytes] | None
    expect: int
    chat: bool = False  # the floor and the peers answer it too
    bare: bool = False  # a GET the floors answer too, with their bare "ok" (a request's floor price)
    limited: bool = False  # against the Worker whose limit is 1 request


SCENARIOS: dict[str, Scenario] = {
    "models": Scenario("GET", "/v1/models", None, 200, bare=True),
    "miss": Scenario("POST", CHAT, lambda: _chat(f"bench {uuid.uuid4().hex}"), 200, chat=True),
    "hit": Scenario("POST", CHAT, lambda: _chat("bench the same prompt"), 200),
    "stream": Scenario("POST", CHAT, lambda: _chat(f"bench {uuid.uuid4().hex}", stream=True), 200, chat=True),
    "429": Scenario("POST", CHAT, lambda: _chat(f"bench {uuid.uuid4().hex}"), 429, limited=True),
    "health": Scenario("GET", "/health", None, 200, bare=True),
    "metrics": Scenario("GET", "/metrics", None, 200),
}


@dataclass
class Target:
    name: str
    headers: dict[str, str]
    chat_only: bool = False
    extra_env: dict[str, str] | None = None  # a Flaregate target: its variables beyond the bench's
    cwd: Path = REPO
    dev: wrangler_dev.DevServer | None = None
    limited: wrangler_dev.DevServer | None = None  # flaregate targets: the 429 Worker
    floor: Path | None = None  # a floor Worker's directory, and its FLOOR_OPS
    floor_ops: str = ""
    skipped: str | None = None
    semantic_fill: int = 0  # a semantic target: the entries put in its partition before measuring
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    startup: dict[str, float] = field(default_factory=dict)  # CPU to the first answer, source size

    def server_for(self, scenario: Scenario) -> wrangler_dev.DevServer | None:
        if self.chat_only and not (scenario.chat or (scenario.bare and self.floor is not None)):
            return None
        return self.limited if scenario.limited else self.dev


def _worker_env(mock_url: str, **extra: str) -> dict[str, str]:
    providers = [{"name": "mock-upstream", "kind": "openai", "base_url": mock_url + "/v1",
                  "api_key_env": "BENCH_UPSTREAM_API_KEY"}]
    return {"FLAREGATE_API_KEYS": GATEWAY_KEY, "BENCH_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "FLAREGATE_PROVIDERS": json.dumps(providers),
            "FLAREGATE_ROUTES": json.dumps({"bench-model": ["mock-upstream"]}),
            "RATE_LIMIT_CAPACITY": "1000000000", "RATE_LIMIT_REFILL_PER_SECOND": "1000000000",
            "FLAREGATE_ADMIN_KEY": ADMIN_KEY, "FLAREGATE_SIGNING_SECRET": SIGNING_SECRET, **extra}


def _mock_upstream(work: Path) -> Server:
    """The fast mock upstream, started: every chat answered with the fixed benchmark reply."""
    python = REPO / ".venv" / "bin" / "python"
    port = free_port()
    mock = Server("mock", [str(python), str(REPO / "tests" / "support" / "mock_upstream.py"),
                           "--port", str(port), "--fixed"], dict(os.environ), port, "/v1/models", work)
    mock.start()
    return mock


def _start_worker(name: str, work: Path, env: dict[str, str], cwd: Path = REPO,
                  inspector_port: int | None = None) -> wrangler_dev.DevServer:
    data = work / name
    data.mkdir(parents=True)
    env_file = wrangler_dev.write_env_file(data / "bench.env", env)
    command = wrangler_dev.wrangler_command(free_port(), inspector_port or free_port(), data / "state", env_file)
    return wrangler_dev.start(command, log_path=data / "wrangler.log", ready_timeout=240, cwd=cwd)


@contextmanager
def one_worker(scenario: Scenario, variables: list[str], inspector_port: int | None = None,
               cwd: Path = REPO) -> Iterator[tuple[wrangler_dev.DevServer, dict[str, str]]]:
    """The mock upstream and one Worker (this tree's, or the one in ``cwd``) set up for
    ``scenario`` (with ``NAME=VALUE`` variables, and the one-request bucket of the 429
    path), both stopped on exit. Yields the Worker and the headers its requests carry.
    On a Worker that does not start, prints the end of wrangler's log, then raises."""
    with tempfile.TemporaryDirectory(prefix="fg-edge-one-") as tmp:
        work = Path(tmp)
        mock = _mock_upstream(work)
        dev = None
        try:
            extra = dict(v.split("=", 1) for v in variables)
            if scenario.limited:
                extra.update(ONE_REQUEST_BUCKET)
            try:
                dev = _start_worker("worker", work, _worker_env(mock.base_url, **extra), cwd, inspector_port)
            except wrangler_dev.RuntimeUnavailable:
                print((work / "worker" / "wrangler.log").read_text(errors="replace")[-4000:])
                raise
            yield dev, {**AUTH, **(ADMIN if scenario.path == "/metrics" else {})}
        finally:
            if dev is not None:
                wrangler_dev.stop(dev.process)
            mock.stop()


def send(dev: wrangler_dev.DevServer, scenario: Scenario, headers: dict[str, str]) -> int:
    """One request of ``scenario``; its status."""
    return _request(dev.base_url, scenario.method, scenario.path, scenario.body() if scenario.body else None,
                    headers)


def setup_portkey(source: Path | None) -> str:
    """Portkey's Worker source from a git checkout of Portkey-AI/gateway (only the paths the
    Worker needs: a mirror may lack some large blobs) and its runtime npm deps, into
    bench/.peers/portkey-worker."""
    if source is None:
        return (f"no Portkey source: pass --portkey-source DIR (a git checkout or mirror of "
                f"Portkey-AI/gateway) or set {PORTKEY_MIRROR_VAR}")
    if not source.exists():
        return f"no Portkey source: {source} is absent"
    if PORTKEY_DIR.exists():
        shutil.rmtree(PORTKEY_DIR)
    PORTKEY_DIR.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(source), "archive", "HEAD", *PORTKEY_PATHS],
                             capture_output=True, check=False)
    subprocess.run(["tar", "-x", "-C", str(PORTKEY_DIR)], input=archive.stdout, check=True)
    # Runtime deps only; NODE_ENV=production skips its husky "prepare" hook.
    done = subprocess.run(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"], cwd=PORTKEY_DIR,
                          env={**os.environ, "NODE_ENV": "production"}, capture_output=True, text=True)
    if done.returncode != 0:
        return "npm ci failed: " + done.stderr.strip()[-300:]
    return ""


def _portkey_skip_reason() -> str | None:
    if not (PORTKEY_DIR / "src" / "index.ts").exists():
        return f"Portkey's Worker source is absent ({PORTKEY_DIR.relative_to(REPO)}; run with --setup-portkey --portkey-source DIR)"
    if not (PORTKEY_DIR / "node_modules" / "hono").exists():
        return f"Portkey's npm deps are not installed in {PORTKEY_DIR.relative_to(REPO)} (run with --setup-portkey)"
    return None


def _workerd_pids(dev: wrangler_dev.DevServer) -> list[int]:
    pids = []
    for pid in process_tree(dev.process.pid):
        try:
            if "workerd" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                pids.append(pid)
        except OSError:
            pass
    return pids


def _request(base_url: str, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> int:
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()  # a stream is read to its end
        return response.status
    finally:
        conn.close()


def measure(dev: wrangler_dev.DevServer, scenario: Scenario, headers: dict[str, str], n: int) -> dict[str, Any]:
    headers = {**headers, **(ADMIN if scenario.path == "/metrics" else {})}
    make = scenario.body
    for _ in range(3):  # warm: the isolate, the route, the cache entry for "hit"
        _request(dev.base_url, scenario.method, scenario.path, make() if make else None, headers)
    pids = _workerd_pids(dev)
    before, started = cpu_seconds(pids), time.perf_counter()
    statuses: dict[int, int] = {}
    for _ in range(n):
        status = _request(dev.base_url, scenario.method, scenario.path, make() if make else None, headers)
        statuses[status] = statuses.get(status, 0) + 1
    wall = time.perf_counter() - started
    cpu = cpu_seconds(pids) - before
    return {"cpu_ms_per_request": cpu * 1000 / n, "wall_ms_per_request": wall * 1000 / n,
            "statuses": statuses, "ok": statuses.get(scenario.expect, 0) == n}


def measure_idle(dev: wrangler_dev.DevServer) -> dict[str, Any]:
    """Background CPU with no requests (alarms, timers), in ms per second."""
    pids = _workerd_pids(dev)
    before = cpu_seconds(pids)
    time.sleep(IDLE_SECONDS)
    return {"cpu_ms_per_request": (cpu_seconds(pids) - before) * 1000 / IDLE_SECONDS, "ok": True, "statuses": {}}


def _befores(specs: list[str] | None) -> list[tuple[str, Path]]:
    """``--before DIR`` or ``--before NAME=DIR`` (repeatable): the older checkouts to run."""
    befores = []
    for spec in specs or []:
        name, _, checkout = spec.rpartition("=")
        befores.append((name or "before", Path(checkout)))
    return befores


def _targets(args: argparse.Namespace, names: list[str]) -> list[Target]:
    targets = [Target("flaregate", AUTH, extra_env={})]
    for name, checkout in _befores(args.before):
        targets.append(Target(name, AUTH, extra_env={}, cwd=checkout))
    fills = args.semantic_fill or []
    for fill in fills:
        targets.append(Target("semantic" if len(fills) == 1 else f"semantic-{fill}", AUTH, semantic_fill=fill,
                              extra_env={"FLAREGATE_ROUTES": json.dumps(SEMANTIC_ROUTES), "CACHE_TTL_SECONDS": "3600"}))
    for spec in args.variant or []:
        name, _, assignments = spec.partition(":")
        pairs = dict(a.split("=", 1) for a in assignments.split(";") if "=" in a)
        targets.append(Target(name, AUTH, extra_env=pairs))
    plain = {"Content-Type": "application/json"}
    floors = [] if args.no_peers else [("floor", "py", ""), ("floor-js", "js", "")]
    for spec in args.floor or []:
        name, _, rest = spec.partition(":")
        lang, _, ops = rest.partition(":")
        floors.append((name, lang, ops))
    for name, lang, ops in floors:
        targets.append(Target(name, dict(plain), chat_only=True, floor=FLOOR_JS_DIR if lang == "js" else FLOOR_DIR,
                              floor_ops=ops))
    if not args.no_peers:
        portkey = Target("portkey", {"Content-Type": "application/json", "Authorization": f"Bearer {UPSTREAM_KEY}",
                                     "x-portkey-provider": "openai"}, chat_only=True)
        portkey.skipped = _portkey_skip_reason()
        targets.append(portkey)
    return targets


def _startup(target: Target) -> None:
    """What a cold start costs: workerd's CPU from its start to the first answer (the ready
    check's /health, module loading included) and the Python source the Worker bundles."""
    assert target.dev is not None
    target.startup["cpu_ms_to_first_answer"] = round(cpu_seconds(_workerd_pids(target.dev)) * 1000, 1)
    source = target.cwd / "src" if target.extra_env is not None else (target.floor or target.cwd)
    target.startup["python_source_kib"] = round(sum(f.stat().st_size for f in source.rglob("*.py")) / 1024, 1)


def _fill_semantic(dev: wrangler_dev.DevServer, count: int) -> None:
    """``count`` answered prompts in the bench route's partition (each one a miss, indexed)."""
    for i in range(count):
        _request(dev.base_url, "POST", CHAT, _chat(f"bench fill {i} {uuid.uuid4().hex}"), AUTH)
    print(f"semantic: {count} entries filled", flush=True)


def _start(target: Target, work: Path, mock_url: str, names: list[str]) -> None:
    if target.extra_env is not None:  # a Flaregate Worker
        extra = target.extra_env
        target.dev = _start_worker(target.name, work, _worker_env(mock_url, **extra), target.cwd)
        _startup(target)
        if target.semantic_fill:
            _fill_semantic(target.dev, target.semantic_fill)
        if "429" in names:
            target.limited = _start_worker(target.name + "-429", work, _worker_env(
                mock_url, **{**extra, **ONE_REQUEST_BUCKET}),
                target.cwd)
    elif target.floor is not None:
        # The runtime's SDK (``workers``) is vendored in the repo's python_modules: share it.
        link = FLOOR_DIR / "python_modules"
        if not link.exists():
            link.symlink_to(Path("..") / ".." / "python_modules")
        env = {"UPSTREAM_URL": mock_url, "UPSTREAM_KEY": UPSTREAM_KEY, "FLOOR_OPS": target.floor_ops}
        target.dev = _start_worker(target.name, work, env, target.floor)
        _startup(target)
    elif target.name == "portkey":
        target.headers["x-portkey-custom-host"] = mock_url + "/v1"
        target.dev = _start_worker("portkey", work, {}, PORTKEY_DIR)


def _table(targets: list[Target], names: list[str], rounds: int) -> tuple[str, dict[str, Any]]:
    shown = [t for t in targets if t.results]
    summary: dict[str, Any] = {}
    lines = [f"| ms CPU per request (median of {rounds}) | " + " | ".join(t.name for t in shown) + " |",
             "|---" * (len(shown) + 1) + "|"]
    for name in ["idle", *names]:
        cells = []
        for target in shown:
            runs = target.results.get(name)
            if not runs:
                cells.append("—")
                continue
            median = statistics.median(x["cpu_ms_per_request"] for x in runs)
            ok = all(x["ok"] for x in runs)
            summary.setdefault(target.name, {})[name] = {
                "cpu_ms_median": round(median, 3), "cpu_ms_rounds": [round(x["cpu_ms_per_request"], 3) for x in runs],
                "all_ok": ok}
            values = [x["cpu_ms_per_request"] for x in runs]
            spread = f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""
            cells.append(f"{median:.2f}{spread}" + ("" if ok else " (unexpected statuses)"))
        label = "idle (ms CPU per second)" if name == "idle" else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    # "What the Worker would be billed": wrangler dev's own harness (the JavaScript floor's
    # figure for the same scenario; for those the floors do not answer, its GET) taken away.
    js = summary.get("floor-js", {})
    if js:
        lines += ["", "| billed ms CPU (minus floor-js) | " + " | ".join(t.name for t in shown) + " |",
                  "|---" * (len(shown) + 1) + "|"]
        for name in names:
            base = (js.get(name) or js.get("models") or {}).get("cpu_ms_median")
            if base is None:
                continue
            cells = []
            for target in shown:
                mine = summary.get(target.name, {}).get(name)
                if mine is None:
                    cells.append("—")
                    continue
                billed = [round(x - base, 3) for x in mine["cpu_ms_rounds"]]
                mine["billed_ms_median"] = round(mine["cpu_ms_median"] - base, 3)
                cells.append(f"{mine['billed_ms_median']:.2f} ({min(billed):.2f}-{max(billed):.2f})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    started = [t for t in targets if t.startup]
    if started:
        lines += ["", "| start-up | " + " | ".join(t.name for t in started) + " |", "|---" * (len(started) + 1) + "|"]
        for key in ("cpu_ms_to_first_answer", "python_source_kib"):
            lines.append(f"| {key} | " + " | ".join(f"{t.startup.get(key, 0):g}" for t in started) + " |")
        for target in started:
            summary.setdefault(target.name, {})["startup"] = target.startup
    befores = [t.name for t in targets if t.cwd != REPO and t.extra_env is not None]
    for peer in ("portkey", *befores, "floor", "floor-js"):
        ratios = []
        for name in names:
            mine = summary.get("flaregate", {}).get(name)
            theirs = summary.get(peer, {}).get(name)
            if mine and theirs and theirs["cpu_ms_median"] > 0:
                # Round i of each target ran back to back (interleaved): the per-round ratios
                # show how far the noise reaches.
                paired = sorted(a / b for a, b in zip(mine["cpu_ms_rounds"], theirs["cpu_ms_rounds"], strict=False) if b)
                spread = f" ({paired[0]:.2f}-{paired[-1]:.2f} by round)" if len(paired) > 1 else ""
                ratios.append(f"{name} {mine['cpu_ms_median'] / theirs['cpu_ms_median']:.2f}x{spread}")
        if ratios:
            lines.append(f"\nflaregate / {peer}: " + ", ".join(ratios))
    for target in targets:
        if target.skipped:
            lines.append(f"\n{target.name}: skipped: {target.skipped}")
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=60, help="requests per scenario per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="scenarios to run")
    parser.add_argument("--before", action="append", metavar="[NAME=]DIR",
                        help="another checkout whose Worker runs as the 'before' target (repeatable, NAME=DIR)")
    parser.add_argument("--variant", action="append", metavar="NAME:VAR=VALUE;...",
                        help="also run this tree's Worker with these variables (repeatable)")
    parser.add_argument("--semantic-fill", type=int, metavar="N", action="append",
                        help="also run the 'semantic' target, its partition filled with N entries (repeatable: "
                             "one target 'semantic-N' each)")
    parser.add_argument("--no-peers", action="store_true", help="leave out the floors and Portkey")
    parser.add_argument("--floor", action="append", metavar="NAME:py|js:OPS",
                        help="also run a floor with these runtime operations (FLOOR_OPS; repeatable)")
    parser.add_argument("--setup-portkey", action="store_true",
                        help=f"(re)install Portkey's Worker into {PORTKEY_DIR} first")
    parser.add_argument("--portkey-source", type=Path, default=os.environ.get(PORTKEY_MIRROR_VAR) or None,
                        help=f"a git checkout or mirror of Portkey-AI/gateway (default: ${PORTKEY_MIRROR_VAR})")
    parser.add_argument("--label", default="latest",
                        help="name of this run in the output file (edge-LABEL.json; the default replaces the kept one)")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    if args.setup_portkey:
        failure = setup_portkey(Path(args.portkey_source) if args.portkey_source else None)
        if failure:
            print(f"portkey setup: {failure}", flush=True)
    targets = _targets(args, names)
    with tempfile.TemporaryDirectory(prefix="fg-bench-edge-") as tmp:
        work = Path(tmp)
        mock = _mock_upstream(work)
        try:
            for target in targets:
                if target.skipped:
                    continue
                try:
                    _start(target, work, mock.base_url, names)
                except wrangler_dev.RuntimeUnavailable as exc:
                    target.skipped = f"did not start: {exc}"
            live = [t for t in targets if not t.skipped]
            if not live:
                for target in targets:
                    print(f"{target.name}: {target.skipped}", file=sys.stderr)
                raise SystemExit("no Worker started (see above); did you source scripts/env.sh and ensure_wrangler?")
            for r in range(args.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for target in live[r % len(live):] + live[:r % len(live)]:
                    assert target.dev is not None
                    idle = measure_idle(target.dev)
                    target.results.setdefault("idle", []).append(idle)
                for name in order:
                    scenario = SCENARIOS[name]
                    for target in live[r % len(live):] + live[:r % len(live)]:
                        dev = target.server_for(scenario)
                        if dev is None:
                            continue
                        result = measure(dev, scenario, target.headers, args.n)
                        target.results.setdefault(name, []).append(result)
                        print(f"round {r + 1} {target.name:9} {name:8} {result['cpu_ms_per_request']:7.2f} ms CPU/request"
                              f"  {result['statuses']}", flush=True)
        finally:
            for target in targets:
                for dev in (target.dev, target.limited):
                    if dev is not None:
                        wrangler_dev.stop(dev.process)
            mock.stop()
    table, summary = _table(targets, names, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"edge-{args.label}.json"
    path.write_text(json.dumps({"label": args.label, "n": args.n, "rounds": args.rounds, "targets": summary,
                                "skipped": {t.name: t.skipped for t in targets if t.skipped}}, indent=2) + "\n")
    print("\n" + table)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
