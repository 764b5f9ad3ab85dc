"""``python -m bench.edge_profile``: where a Worker request's CPU goes inside workerd.

Python's clocks under workerd only move on I/O, so nothing in Python can time itself; V8's
sampling profiler can, from its own thread. This starts this tree's Worker under
``wrangler dev`` (the offline runtime), attaches to its inspector (the Chrome DevTools
protocol that ``wrangler dev --inspector-port`` serves), records a CPU profile over N
requests of one scenario, and prints the self time by function and by kind:

  ``python``   WebAssembly: the CPython interpreter running our code (and the stdlib)
  ``ffi``      Pyodide's JavaScript glue: JsProxy / PyProxy conversions, calls across
  ``runtime``  the JavaScript of the runtime and the SDK (fetch, streams, RPC stubs)
  ``native``   ``(program)`` / ``(garbage collector)``: V8 itself

The isolate the inspector shows is the Worker's (Durable Objects run in their own, so
their CPU is not in this profile: price those with ``python -m bench.edge --floor``).

Needs ``source scripts/env.sh; ensure_node; ensure_wrangler; ensure_edge_runtime``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import urllib.request
from pathlib import Path
from typing import Any

import websockets

from .edge import SCENARIOS, one_worker, send
from .procs import free_port


def _kind(frame: dict[str, Any]) -> str:
    name, url = frame.get("functionName", ""), frame.get("url", "")
    if name in ("(program)", "(garbage collector)", "(idle)", "(root)"):
        return "native"
    if url.startswith("wasm://") or name.startswith("$") or "wasm-function" in name:
        return "python"
    if "pyodide" in url or "python" in url or name.startswith(("_pyproxy", "Module.", "hiwire", "js2python",
                                                               "python2js", "callPyObject")):
        return "ffi"
    return "runtime"


def _debugger_url(inspector_port: int) -> str:
    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{inspector_port}/json/list", timeout=10).read())
    return str(targets[0]["webSocketDebuggerUrl"])


async def _profile(url: str, send: Any, interval_us: int) -> dict[str, Any]:
    # wrangler's inspector proxy wants an Origin it allows (localhost) from a client with a User-Agent.
    async with websockets.connect(url, max_size=2**28, origin="http://localhost") as ws:  # type: ignore[arg-type]
        ids = iter(range(1, 10**6))

        async def call(method: str, params: dict[str, Any] | None = None) -> Any:
            mid = next(ids)
            await ws.send(json.dumps({"id": mid, "method": method, "params": params or {}}))
            while True:
                reply = json.loads(await ws.recv())
                if reply.get("id") == mid:
                    return reply.get("result")

        await call("Profiler.enable")
        await call("Profiler.setSamplingInterval", {"interval": interval_us})
        await call("Profiler.start")
        await asyncio.get_running_loop().run_in_executor(None, send)
        result = await call("Profiler.stop")
        return result["profile"]  # type: ignore[no-any-return]


def summarise(profile: dict[str, Any], top: int) -> str:
    nodes = {n["id"]: n for n in profile["nodes"]}
    deltas = profile.get("timeDeltas") or []
    self_us: collections.Counter[int] = collections.Counter()
    for node_id, delta in zip(profile["samples"], deltas[1:] + [0], strict=False):
        self_us[node_id] += delta
    by_function: collections.Counter[str] = collections.Counter()
    by_kind: collections.Counter[str] = collections.Counter()
    for node_id, us in self_us.items():
        frame = nodes[node_id]["callFrame"]
        kind = _kind(frame)
        label = f"{frame.get('functionName') or '(anonymous)'}  [{kind}] {Path(frame.get('url', '')).name}"
        by_function[label] += us
        by_kind[kind] += us
    total = sum(by_kind.values()) or 1
    lines = ["| kind | ms | share |", "|---|---|---|"]
    lines += [f"| {k} | {v / 1000:.1f} | {v / total:.0%} |" for k, v in by_kind.most_common()]
    lines += ["", f"top {top} functions by self time (of {total / 1000:.1f} ms sampled):"]
    lines += [f"{v / 1000:8.1f} ms  {k}" for k, v in by_function.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge_profile", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--interval-us", type=int, default=100)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="an extra Worker variable")
    parser.add_argument("--out", type=Path, help="also write the raw .cpuprofile here (Chrome DevTools opens it)")
    args = parser.parse_args(argv)
    scenario = SCENARIOS[args.scenario]
    inspector = free_port()
    with one_worker(scenario, args.var, inspector_port=inspector) as (dev, headers):
        for _ in range(5):  # warm the isolate and the route
            send(dev, scenario, headers)

        def requests() -> None:
            for _ in range(args.n):
                send(dev, scenario, headers)

        profile = asyncio.run(_profile(_debugger_url(inspector), requests, args.interval_us))
    if args.out:
        args.out.write_text(json.dumps(profile))
    print(f"{args.scenario}, {args.n} requests\n")
    print(summarise(profile, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
