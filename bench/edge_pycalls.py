"""``python -m bench.edge_pycalls``: which Python functions a Worker request calls, in workerd.

Python's clocks under workerd only move on I/O, so no Python profiler can time the Worker,
and V8's sampler sees only the interpreter's WebAssembly, not which Python function it
runs. Call counts need no clock. This runs this tree's Worker under ``wrangler dev`` from a
scratch folder whose entry module wraps the real one with ``cProfile`` (a copy of the
tree's code: nothing in the tree changes), sends N requests of one scenario, and prints the calls
per request by function, our code, the SDK and the stdlib alike. The Durable Objects' Python
is in the count when ``wrangler dev`` runs them in the Worker's isolate.

Needs ``source scripts/env.sh; ensure_node; ensure_wrangler; ensure_edge_runtime``.
"""

from __future__ import annotations

import argparse
import collections
import marshal
import pstats
import shutil
import tempfile
import urllib.request
from pathlib import Path

from .edge import SCENARIOS, one_worker, send

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

# The scratch Worker's entry: the real one (copied beside it as ``real_entry``, its Durable
# Object classes exported as they are), plus two bench-only paths that start and stop the
# profiler and hand its stats back marshalled (what pstats reads).
ENTRY = '''
import cProfile, marshal
from workers import Response
from real_entry import *  # the Durable Object classes, and Default
from real_entry import Default as _Real

_profile = None


class Default(_Real):
    async def fetch(self, request):
        global _profile
        if request.url.endswith("/__pycalls/start"):
            _profile = cProfile.Profile()
            _profile.enable()
            return Response("started")
        if request.url.endswith("/__pycalls/stop"):
            _profile.disable()
            _profile.create_stats()
            return Response(marshal.dumps(_profile.stats).hex())
        return await super().fetch(request)
'''


def scratch_worker(into: Path) -> Path:
    (into / "src").mkdir(parents=True)
    (into / "src" / "entry.py").write_text(ENTRY)
    shutil.copy(REPO / "src" / "entry.py", into / "src" / "real_entry.py")
    for name in ("flaregate", "durable_objects"):  # copies: wrangler does not follow linked folders
        shutil.copytree(REPO / "src" / name, into / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("python_modules", "wrangler.toml", "pyproject.toml"):
        (into / name).symlink_to(REPO / name)
    return into


def per_request(stats: dict, n: int, top: int, match: str) -> str:
    rows = []
    for (file, line, func), (_cc, calls, *_rest) in stats.items():
        name = f"{file.split('/site-packages/')[-1].split('/python_modules/')[-1]}:{line}({func})"
        if match in name:
            rows.append((calls / n, name))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    lines = [f"{total:.0f} calls per request{f' matching {match!r}' if match else ''}"]
    lines += [f"{calls:8.1f}  {name}" for calls, name in rows[:top]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge_pycalls", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--match", default="", help="only functions whose file:line(name) contains this")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="an extra Worker variable")
    parser.add_argument("--out", type=Path, help="also write the stats here (pstats.Stats reads the file)")
    args = parser.parse_args(argv)
    scenario = SCENARIOS[args.scenario]
    statuses: collections.Counter[int] = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="fg-edge-pycalls-") as tmp, \
            one_worker(scenario, args.var, cwd=scratch_worker(Path(tmp) / "worker")) as (dev, headers):
        for _ in range(5):  # warm the isolate and the route
            statuses[send(dev, scenario, headers)] += 1
        urllib.request.urlopen(dev.base_url + "/__pycalls/start", timeout=30).read()
        for _ in range(args.n):
            statuses[send(dev, scenario, headers)] += 1
        raw = bytes.fromhex(urllib.request.urlopen(dev.base_url + "/__pycalls/stop", timeout=60).read().decode())
    stats = marshal.loads(raw)
    if args.out:
        args.out.write_bytes(raw)
        pstats.Stats(str(args.out))  # fails here, not later, if the file is not readable
    print(f"{args.scenario}, {args.n} requests (statuses, with the 5 warm-up requests: {dict(statuses)})\n")
    print(per_request(stats, args.n, args.top, args.match))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
