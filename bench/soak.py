"""Soak: the local standalone server under steady load for a long time, its memory sampled.

16 connections (``--connections``) send chat completions for ``--minutes`` (default 30)
to the built-in mock provider (``--upstream builtin``, the default: no other process on
the cores) or to the tests' mock upstream (``--upstream mock``, ``--fixed`` replies). The
load comes from ``wrk`` when it is installed (``bench/bench.lua``), else from an asyncio
aiohttp client in a separate process, so the server keeps its own core. Every
``--interval`` seconds (30) the server's ``/proc/PID/status`` is read (VmRSS and its
anonymous / file parts), with the requests done and errors so far, the SQLite file's size,
the row counts of its tables and the hot cache tier's size (``/admin/cache/stats``). At the
end: every sample, the RSS slope after the warm-up (least squares, KB per minute over
minutes ``--warmup``..end, 5 by default) and the totals.

Why memory grows, if it does (``--diagnose``, a switch of this bench only): the server is
started through a small wrapper that counts live Python objects by type (``gc``) at every
sample, on SIGUSR1, and prints which types grew after the warm-up; with ``--trace-from M``
it also starts ``tracemalloc`` at minute M and at the end lists where the allocations made
since then and still alive were made (tracing slows the server: its part of the run is
left out of the slope).

    .venv/bin/python -m bench.soak                       # 30 minutes
    .venv/bin/python -m bench.soak --minutes 4 --warmup 1 --diagnose

Not part of the test suite (it asserts nothing); local host only (an isolate has no
process to sample).

Measured once (4 minutes, ``--warmup 1 --diagnose --trace-from 3``, built-in mock, every
prompt new, ~1 100 requests/s on 2 shared cores, no errors): VmRSS 67.9 MB idle, 79.2 MB at
0.5 min, then 79.5, 79.8, 79.8, 79.9, 79.9 MB at minutes 1..3 (+380, +220, +56, +60, +32 KB
per 30 s): +170 KB/min over minutes 1..3 by least squares, +90 KB/min over 2..3, falling.
Live Python objects stayed flat (77 278 -> 77 642 between minutes 1 and 4, timers and
contexts of requests in flight); the hot cache tier was full (1 000 entries) within 30 s
and its read log at its bound; what tracemalloc saw allocated after minute 3 and still
alive was that turnover (entries replacing evicted ones), not new state. The rest is below
Python: SQLite's page caches (two connections, up to 2 MiB each, filling as the file grows)
and the allocator's arenas. Meanwhile the SQLite file grew ~2 KB per request (a request-log
row, 24 h retention, and a warm-tier row, 1 h): 530 MB in 4 minutes, on disk, not in RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration.conftest import ADMIN_KEY, GATEWAY_KEY, free_port  # noqa: E402
from tests.support.mock_upstream import MockUpstreamProcess  # noqa: E402

CHAT = "/v1/chat/completions"
DIAG_ENV = "FLAREGATE_SOAK_DIAG"  # set by --diagnose: the path the server's wrapper writes to


# -- the server, through a wrapper that can count its objects ----------------------------
def _server_main() -> None:
    """Run ``flaregate serve`` (argv after ``-c``); with DIAG_ENV set, SIGUSR1 writes a JSON
    line of live object counts by type (and, once SIGUSR2 started tracemalloc, the top
    allocation sites of what was allocated since and is still alive) to that file."""
    out = os.environ.get(DIAG_ENV)
    if out:
        import gc
        import tracemalloc
        from collections import Counter

        def dump(signum: int, frame: Any) -> None:
            counts = Counter(type(o).__name__ for o in gc.get_objects())
            record: dict[str, Any] = {"t": time.time(), "objects": dict(counts.most_common(60)),
                                      "total_objects": sum(counts.values())}
            if tracemalloc.is_tracing():
                stats = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, tracemalloc.__file__)]).statistics("lineno")
                record["traced"] = [{"where": str(s.traceback[0]), "kb": round(s.size / 1024, 1), "blocks": s.count}
                                    for s in stats[:25]]
                record["traced_kb"] = round(sum(s.size for s in stats) / 1024, 1)
            with open(out, "a") as file:
                file.write(json.dumps(record) + "\n")

        signal.signal(signal.SIGUSR1, dump)
        signal.signal(signal.SIGUSR2, lambda signum, frame: tracemalloc.start(8))
    from flaregate.hosts.local.cli import main

    sys.exit(main(sys.argv[1:]))


def start_server(data_dir: Path, env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    clean = {k: v for k, v in os.environ.items()
             if not (k.startswith(("FLAREGATE_", "RATE_LIMIT", "CACHE_")) or k.endswith("_API_KEY"))}
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.soak import _server_main; _server_main()"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port), "--data-dir",
                                    str(data_dir)], env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log_path.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return process, base
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the server did not start")
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- what is sampled ------------------------------------------------------------------------
def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def table_rows(db: Path) -> dict[str, int]:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
    except sqlite3.Error:
        return {}


def hot_cache(base: str) -> dict[str, Any]:
    from flaregate.security.signing import sign_request

    path = "/admin/cache/stats"
    headers = {"authorization": f"Bearer {ADMIN_KEY}", **sign_request(ADMIN_KEY, "GET", path, b"")}
    try:
        stats = httpx.get(base + path, headers=headers, timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return {}
    hot = stats.get("hot") or {}
    return {k: hot[k] for k in ("entries", "bytes") if k in hot}


# -- the load -------------------------------------------------------------------------------
def _load_process(base: str, connections: int, seconds: float, prompts: int, model: str,
                  done: Any, errors: Any) -> None:
    asyncio.run(_load(base, connections, seconds, prompts, model, done, errors))


async def _load(base: str, connections: int, seconds: float, prompts: int, model: str,
                done: Any, errors: Any) -> None:
    import aiohttp

    headers = {"authorization": f"Bearer {GATEWAY_KEY}", "content-type": "application/json"}
    end = time.monotonic() + seconds
    counter = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(base, connector=connector, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def worker(index: int) -> None:
            nonlocal counter
            while time.monotonic() < end:
                counter += 1
                text = f"soak {counter % prompts if prompts else counter} from {index}"
                body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}]})
                try:
                    async with session.post(CHAT, data=body) as response:
                        await response.read()
                        ok = response.status == 200
                except (TimeoutError, aiohttp.ClientError):
                    ok = False
                with (done if ok else errors).get_lock():
                    (done if ok else errors).value += 1

        await asyncio.gather(*(worker(i) for i in range(connections)))


def start_load(base: str, args: argparse.Namespace, model: str, done: Any, errors: Any) -> Any:
    seconds = args.minutes * 60
    if shutil.which("wrk") and args.prompts == 0:
        lua = ROOT / "bench" / "bench.lua"
        return subprocess.Popen(["wrk", "-t2", f"-c{args.connections}", f"-d{int(seconds)}s", "-s", str(lua),
                                 base + CHAT, "--", "unique", str(os.getpid()), f"Authorization: Bearer {GATEWAY_KEY}"],
                                stdout=subprocess.PIPE, text=True)
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_load_process, daemon=True,
                              args=(base, args.connections, seconds, args.prompts, model, done, errors))
    process.start()
    return process


def slope_kb_per_minute(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else None


# -- the run --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes left out of the slope")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--upstream", choices=("builtin", "mock"), default="builtin")
    parser.add_argument("--prompts", type=int, default=0,
                        help="cycle this many distinct prompts (cache hits); 0: every prompt new (misses)")
    parser.add_argument("--diagnose", action="store_true", help="count the server's live objects per sample")
    parser.add_argument("--trace-from", type=float, default=None,
                        help="with --diagnose: start tracemalloc at this minute (slows the server from then)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server, e.g. LOG_MAX_BYTES=...")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="flaregate-soak-"))
    env = {"FLAREGATE_API_KEYS": GATEWAY_KEY, "FLAREGATE_ADMIN_KEY": ADMIN_KEY, "LOG_LEVEL": "warn",
           "RATE_LIMIT_CAPACITY": "100000000", "RATE_LIMIT_REFILL_PER_SECOND": "100000000",
           **dict(item.split("=", 1) for item in args.env)}
    diag = work / "diag.jsonl"
    if args.diagnose:
        env[DIAG_ENV] = str(diag)
    mock = None
    model = "mock-1"
    # wrk's script (bench/bench.lua) asks for "bench-model": the built-in mock serves it too.
    env.setdefault("FLAREGATE_ROUTES", json.dumps({"mock-1": ["mock"], "bench-model": ["mock"]}))
    if args.upstream == "mock":
        mock = MockUpstreamProcess(extra_args=["--fixed"]).__enter__()
        env["FLAREGATE_PROVIDERS"] = json.dumps([{"name": "up", "kind": "openai", "base_url": mock.base_url + "/v1"}])
        env["FLAREGATE_ROUTES"] = json.dumps({"soak": ["up"], "bench-model": ["up"]})
        model = "soak"
    server, base = start_server(work / "data", env, work / "server.log")
    done, errors = multiprocessing.get_context("spawn").Value("q", 0), multiprocessing.get_context("spawn").Value("q", 0)
    samples: list[dict[str, Any]] = []
    traced_at: float | None = None
    wrk_requests = 0  # wrk counts its own requests
    try:
        started = time.monotonic()
        load = start_load(base, args, model, done, errors)
        print(f"soak: {args.connections} connections for {args.minutes:g} min against {args.upstream}; "
              f"server pid {server.pid}; load {'wrk' if isinstance(load, subprocess.Popen) else 'aiohttp'} "
              f"(pid {load.pid}); samples every {args.interval:g} s; work dir {work}", flush=True)
        print(f"{'min':>6} {'VmRSS KB':>10} {'anon KB':>9} {'file KB':>8} {'requests':>10} {'errors':>7} "
              f"{'db KB':>8} {'hot cache':>34} log rows", flush=True)
        next_at = started
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= next_at - started:
                minute = elapsed / 60
                if args.diagnose:
                    os.kill(server.pid, signal.SIGUSR1)
                    if args.trace_from is not None and traced_at is None and minute >= args.trace_from:
                        os.kill(server.pid, signal.SIGUSR2)
                        traced_at = minute
                mem = memory_kb(server.pid)
                db = work / "data" / "flaregate.sqlite3"
                size = sum(p.stat().st_size for p in db.parent.glob("flaregate.sqlite3*")) // 1024
                rows = table_rows(db)
                hot = hot_cache(base)
                sample = {"minute": round(minute, 2), **mem, "requests": done.value, "errors": errors.value,
                          "db_kb": size, "hot": hot, "rows": rows}
                samples.append(sample)
                print(f"{minute:6.2f} {mem.get('VmRSS', 0):>10} {mem.get('RssAnon', 0):>9} {mem.get('RssFile', 0):>8} "
                      f"{done.value:>10} {errors.value:>7} {size:>8} {json.dumps(hot):>34} "
                      f"{rows.get('log_request', '-')}", flush=True)
                next_at += args.interval
            if elapsed >= args.minutes * 60:
                break
            time.sleep(min(1.0, max(0.05, next_at - time.monotonic())))
        if isinstance(load, subprocess.Popen):
            out, _ = load.communicate(timeout=60)
            print("wrk:", out.strip()[-400:])
            with contextlib.suppress(ValueError, IndexError):
                wrk_requests = int(json.loads(out.split("BENCH_RESULT", 1)[1].strip().splitlines()[0])["requests"])
        else:
            load.join(60)
    finally:
        stop(server)
        if mock is not None:
            mock.__exit__(None, None, None)

    clean_until = traced_at if traced_at is not None else float("inf")
    steady = [(s["minute"], s["VmRSS"]) for s in samples if args.warmup <= s["minute"] <= clean_until]
    slope = slope_kb_per_minute(steady)
    anon = slope_kb_per_minute([(s["minute"], s["RssAnon"]) for s in samples
                                if args.warmup <= s["minute"] <= clean_until])
    total_minutes = samples[-1]["minute"] if samples else 0
    print(f"\nrequests {done.value}, errors {errors.value}, {done.value / max(1e-9, total_minutes * 60):.0f}/s")
    if slope is None:
        print(f"slope: too few samples after the {args.warmup:g}-minute warm-up")
    else:
        print(f"RSS slope over minutes {args.warmup:g}..{min(total_minutes, clean_until):.2f}: {slope:+.1f} KB/min "
              f"(anonymous memory {anon:+.1f} KB/min); first {samples[0]['VmRSS']} KB, "
              f"last {samples[-1]['VmRSS']} KB, peak {samples[-1].get('VmHWM')} KB")
    if samples:
        first = next((s for s in samples if s["minute"] >= args.warmup), samples[0])
        grown = {t: samples[-1]["rows"].get(t, 0) - first["rows"].get(t, 0) for t in samples[-1]["rows"]}
        print("table rows added after the warm-up:", json.dumps({t: n for t, n in grown.items() if n}))
    if args.diagnose and diag.exists():
        records = [json.loads(line) for line in diag.read_text().splitlines() if line.strip()]
        after = [r for r, s in zip(records, samples, strict=False) if s["minute"] >= args.warmup]
        if len(after) >= 2:
            a, b = after[0]["objects"], after[-1]["objects"]
            growth = sorted(((b.get(t, 0) - a.get(t, 0), t) for t in set(a) | set(b)), reverse=True)
            print(f"live objects: {after[0]['total_objects']} -> {after[-1]['total_objects']}; grew most:",
                  ", ".join(f"{t} {n:+d}" for n, t in growth[:12] if n))
        traced = [r for r in records if r.get("traced")]
        if traced:
            print(f"allocated since minute {traced_at:.2f} and still alive: {traced[-1]['traced_kb']} KB; top sites:")
            for site in traced[-1]["traced"][:15]:
                print(f"  {site['kb']:>9} KB {site['blocks']:>7} blocks  {site['where']}")
    db = work / "data" / "flaregate.sqlite3"
    if db.exists():
        size = sum(p.stat().st_size for p in db.parent.glob("flaregate.sqlite3*"))
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            pages = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
            records = conn.execute("SELECT COUNT(*) FROM log_request").fetchone()[0]
        log_bytes = sum(v for k, v in pages.items() if k.startswith("log_request"))
        handled = done.value + errors.value or wrk_requests
        print(f"sqlite file {size / 1e6:.1f} MB: {size / max(1, handled):.0f} bytes per request; log_request "
              f"{log_bytes / 1e6:.1f} MB for {records} records ({log_bytes / max(1, records):.0f} bytes each)")
    (work / "samples.json").write_text(json.dumps(samples, indent=1))
    print(f"samples: {work / 'samples.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
