"""``python -m bench.profile``: py-spy samples the gateway while wrk loads one target.

Writes ``bench/results/profile-<target>.svg`` (a flame graph) and ``.txt`` (collapsed
stacks) and prints the functions with the most samples, own time and inclusive.
py-spy comes with bench/requirements.txt (bench/run installs it into bench/.venv).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from .cli import (
    BENCH,
    GATEWAY_KEY,
    Target,
    ensure_wrk,
    flaregate_server,
    gateway_python,
    mock_server,
    preflight,
    run_wrk,
)
from .procs import Server


def top_functions(collapsed: Path, limit: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    out = [f"{total} samples", "", "own time:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(limit)]
    out += ["", "inclusive:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(limit)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=["fg-miss", "fg-hit", "fg-429"], default="fg-miss")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        sys.exit("py-spy is not installed: run bench/run once (it installs bench/requirements.txt)")
    ensure_wrk()
    python = gateway_python()
    work = Path(tempfile.mkdtemp(prefix="flaregate-profile-"))
    servers: list[Server] = []
    try:
        mock = mock_server(python, work)
        mock.start()
        servers.append(mock)
        extra = {"RATE_LIMIT_CAPACITY": "1", "RATE_LIMIT_REFILL_PER_SECOND": "0.0001"} if args.target == "fg-429" else {}
        gateway = flaregate_server("flaregate", python, mock.base_url, work, **extra)
        gateway.start()
        servers.append(gateway)
        mode = "fixed" if args.target == "fg-hit" else "unique"
        target = Target(args.target, args.target, "flaregate", "wrk", mode, {"Authorization": f"Bearer {GATEWAY_KEY}"},
                        None, expect=429 if args.target == "fg-429" else 200, port=gateway.port)
        problem = preflight(target)
        if problem:
            sys.exit(f"{args.target}: {problem}")
        run_wrk(target, args.connections, 2, "warmup-" + uuid.uuid4().hex[:8])
        out = BENCH / "results" / f"profile-{args.target}"
        out.parent.mkdir(parents=True, exist_ok=True)
        # Two passes, one sampler each (flame graph, then collapsed stacks), so they never compete.
        results = []
        for fmt, suffix in (("flamegraph", ".svg"), ("raw", ".txt")):
            spy = subprocess.Popen(
                [py_spy, "record", "--pid", str(gateway.proc.pid), "--rate", str(args.rate), "--duration",
                 str(int(args.seconds)), "--format", fmt, "--output", str(out.with_suffix(suffix)), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            results.append(run_wrk(target, args.connections, args.seconds, uuid.uuid4().hex[:12]))
            spy.wait(args.seconds + 30)
        result = results[-1]
        print(f"{args.target} at {args.connections} connections under py-spy: {result['rps']:.0f} req/s, "
              f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms")
        print(top_functions(out.with_suffix(".txt")))
        print(f"\nFlame graph: {out.with_suffix('.svg')}")
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
