"""A hostile upstream against the local server: its memory while it refuses each attack.

The mock upstream plays three attacks (its hostile faults): an SSE line that never ends
(``endless_line``), a 1 GiB JSON body (``huge_body``, announced by content-length and
chunked) and a stream of valid events that never ends (``endless_stream``). ``--concurrency``
clients send each at once, through the gateway at its default caps (UPSTREAM_MAX_EVENT_BYTES
4 MiB, UPSTREAM_MAX_RESPONSE_BYTES 16 MiB, UPSTREAM_MAX_STREAM_BYTES 64 MiB), while a
sampler reads the server's resident memory (``VmRSS`` of /proc/PID/status, every 10 ms).
Per attack: what the clients got, how long until then, the RSS before and its peak, and
whether a normal request right after was answered.

    .venv/bin/python bench/hostile_upstream.py [--concurrency 4]

Local host only (the Worker's isolate has no process to sample). Not part of the test
suite: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.conftest import GATEWAY_KEY, run_local_gateway  # noqa: E402
from tests.support.mock_upstream import MockUpstreamProcess  # noqa: E402

CHAT = "/v1/chat/completions"
ATTACKS = [  # (name, fault spec, streamed request)
    ("endless_line", {"kind": "endless_line"}, True),
    ("huge_body (content-length)", {"kind": "huge_body"}, False),
    ("huge_body (chunked)", {"kind": "huge_body", "length": False}, False),
    ("endless_stream", {"kind": "endless_stream"}, True),
]


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children (kB lines of /proc/PID/status)."""
    total = 0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(child) for child in task.read_text().split()]
    for one in pids:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class Sampler:
    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self.peak = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def attack(client: httpx.AsyncClient, stream: bool) -> str:
    """What the client was told: the HTTP error code, or the stream's error event code."""
    body = {"model": "gpt-hostile", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    async with client.stream("POST", CHAT, json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return f"{response.status_code} {response.json()['error']['code']}"
        async for line in response.aiter_lines():
            if line.startswith("data: {\"error\""):
                error = json.loads(line[6:])["error"]
                code = error["code"]
                if code == "upstream_stream_interrupted":  # the relays' code: the cap is in the message
                    code = error["message"].split(": ")[1]
                return f"200 stream, then {code}"
        return "200 stream, no error event"


async def run(base_url: str, mock: MockUpstreamProcess, pid: int, concurrency: int) -> list[dict]:
    rows = []
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=120, headers=headers) as client:
        for name, spec, stream in ATTACKS:
            mock.reset()
            mock.add_faults({**spec, "times": concurrency})
            await asyncio.sleep(0.5)  # let the last attack's memory settle
            before = rss_bytes(pid)
            started = time.monotonic()
            with Sampler(pid) as sampler:
                told = await asyncio.gather(*(attack(client, stream) for _ in range(concurrency)))
            seconds = time.monotonic() - started
            health = await client.get("/health")
            normal = await client.post(CHAT, json={"model": "gpt-hostile",
                                                   "messages": [{"role": "user", "content": "hello"}]})
            rows.append({"attack": name, "clients": concurrency, "told": sorted(set(told)),
                         "seconds": round(seconds, 2), "rss_before_mb": round(before / 2**20, 1),
                         "rss_peak_mb": round(sampler.peak / 2**20, 1),
                         "after": f"/health {health.status_code}, chat {normal.status_code}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with MockUpstreamProcess() as mock, tempfile.TemporaryDirectory() as data:
        providers = [{"name": "hostile", "kind": "openai", "base_url": mock.base_url + "/v1"}]
        env = {"FLAREGATE_API_KEYS": GATEWAY_KEY, "FLAREGATE_PROVIDERS": json.dumps(providers),
               "FLAREGATE_ROUTES": json.dumps({"gpt-hostile": ["hostile"]}), "CACHE_TTL_SECONDS": "0",
               "UPSTREAM_MAX_ATTEMPTS": "1", "CIRCUIT_FAILURE_THRESHOLD": "1000",
               "RATE_LIMIT_CAPACITY": "10000", "RATE_LIMIT_REFILL_PER_SECOND": "1000"}
        with run_local_gateway(Path(data), env) as server:
            rows = asyncio.run(run(server.base_url, mock, server.process.pid, args.concurrency))
    width = max(len(r["attack"]) for r in rows)
    print(f"{'attack':<{width}}  clients  seconds  RSS before  RSS peak  told / after")
    for r in rows:
        print(f"{r['attack']:<{width}}  {r['clients']:>7}  {r['seconds']:>7}  {r['rss_before_mb']:>7} MB  "
              f"{r['rss_peak_mb']:>5} MB  {'; '.join(r['told'])} / {r['after']}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
