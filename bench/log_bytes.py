"""Bytes per request-log record on the local host: N chat completions through the real
server (``flaregate serve``, the built-in mock provider), then the pages SQLite uses for
``log_request`` and its indexes (``dbstat``) divided by its rows, and the file's size.

    .venv/bin/python -m bench.log_bytes [--requests 3000] [--connections 8] [--env NAME=VALUE ...]

``--env LOG_MAX_BYTES=...`` (or any other variable) configures the server, e.g. to see the
byte budget hold. Not part of the test suite; the figure is not a timing, so a loaded
machine gives the same answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration.conftest import ADMIN_KEY, GATEWAY_KEY  # noqa: E402

from bench.soak import start_server, stop  # noqa: E402

LOG_TABLES = ("log_request", "log_request_ts", "log_request_id", "log_request_expires", "log_request_unauth",
              "log_request_class")


async def _send(base: str, requests: int, connections: int) -> int:
    ok = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    async with httpx.AsyncClient(base_url=base, timeout=30,
                                 headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as client:
        async def worker() -> None:
            nonlocal ok
            while not queue.empty():
                i = queue.get_nowait()
                body = {"model": "mock-1", "messages": [{"role": "user", "content": f"log bytes {i} {time.time()}"}]}
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.post("/v1/chat/completions", json=body)
                    ok += response.status_code == 200

        await asyncio.gather(*(worker() for _ in range(connections)))
    return ok


def measure(db: Path) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        pages = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
        rows = conn.execute("SELECT COUNT(*) FROM log_request").fetchone()[0]
        sample = conn.execute("SELECT * FROM log_request ORDER BY seq DESC LIMIT 1").fetchone()
        names = [d[0] for d in conn.execute("SELECT * FROM log_request LIMIT 0").description]
    log_bytes = sum(v for k, v in pages.items() if k in LOG_TABLES)
    return {"rows": rows, "log_request_bytes": log_bytes,
            "bytes_per_record": round(log_bytes / rows, 1) if rows else None,
            "by_object": {k: v for k, v in pages.items() if k in LOG_TABLES},
            "file_bytes": sum(p.stat().st_size for p in db.parent.glob(db.name + "*")),
            "sample_row": dict(zip(names, sample, strict=True)) if sample else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.log_bytes", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    args = parser.parse_args(argv)
    env = {"FLAREGATE_API_KEYS": GATEWAY_KEY, "FLAREGATE_ADMIN_KEY": ADMIN_KEY, "LOG_LEVEL": "warn",
           "RATE_LIMIT_CAPACITY": "100000000", "RATE_LIMIT_REFILL_PER_SECOND": "100000000",
           **dict(item.split("=", 1) for item in args.env)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server, base = start_server(work / "data", env, work / "server.log")
        try:
            ok = asyncio.run(_send(base, args.requests, args.connections))
            time.sleep(1.5)  # the last analytics batch (400 ms) reaches the hub
        finally:
            stop(server)
        result = {"requests_ok": ok, **measure(work / "data" / "flaregate.sqlite3")}
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
