"""What the semantic cache adds to a miss on the standalone server, and what its model costs.

    .venv/bin/python -m bench.semantic_bench [--sizes 10000 100000] [--lookups 300]

For each size: a partition of that many entries in a real SQLite file (the local host's
``SqlSemanticIndex``, WordLlama vectors of distinct prompts), then ``--lookups`` misses timed
as the gateway runs them: embed the prompt (the embedded model), then search (the sign-code
scan of the partition, the shortlist's rows read, exact cosine). p50 and p99 of each, in ms.
Then the resident memory of a ``flaregate serve`` process before and after its first
semantic request (the model loads on first use). Timing figures on a shared machine are
provisional; the memory figure is not.

The edge's CPU per miss, semantic cache on vs off, is bench/edge.py's:
``python -m bench.edge --no-peers --only miss --semantic-fill 10000``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.conftest import GATEWAY_KEY, run_local_gateway  # noqa: E402

from flaregate.cache.semantic.guard import features  # noqa: E402
from flaregate.cache.semantic.index import SqlSemanticIndex  # noqa: E402
from flaregate.cache.semantic.settings import DEFAULT_THRESHOLD  # noqa: E402
from flaregate.cache.semantic.vectors import normalise, quantise, sign_code  # noqa: E402
from flaregate.clock import SystemClock  # noqa: E402
from flaregate.hosts.local.static_embedder import StaticEmbedder  # noqa: E402
from flaregate.hosts.local.storage import SqliteStorage  # noqa: E402

TOPICS = ["capital", "recipe", "python", "history", "health", "travel", "finance", "physics", "music", "garden"]


def _prompt(i: int) -> str:
    return f"Question {i}: tell me about {TOPICS[i % len(TOPICS)]} number {i * 7919 % 10007} {uuid.uuid4().hex[:6]}"


def _percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"p50_ms": round(statistics.median(values), 3), "p99_ms": round(values[int(len(values) * 0.99) - 1], 3)}


def partition_bench(size: int, lookups: int, embedder: StaticEmbedder, work: Path) -> dict[str, object]:
    storage = SqliteStorage(work / f"semantic-{size}.sqlite3")
    index = SqlSemanticIndex(storage, SystemClock())
    expires = time.time() + 86400
    batch = 1000
    for start in range(0, size, batch):
        texts = [_prompt(i) for i in range(start, min(size, start + batch))]
        for i, vector in zip(range(start, start + len(texts)), embedder.embed_now(texts), strict=True):
            unit = normalise(vector)
            assert unit is not None
            index.add("bench", f"{i:064x}", format(sign_code(unit), "x"), quantise(unit).hex(),
                      json.dumps(features(texts[i - start]).to_json()), expires, size + 1)
    storage.commit()
    index.search("bench", "0", quantise([1.0] * 256).hex(), 32)  # the partition's codes into memory, once
    embed_ms, search_ms, total_ms = [], [], []
    for n in range(lookups):
        text = f"A new question {n} about {TOPICS[n % len(TOPICS)]} {uuid.uuid4().hex[:6]}"
        t0 = time.perf_counter()
        unit = normalise(embedder.embed_now([text])[0])
        assert unit is not None
        code, vector = format(sign_code(unit), "x"), quantise(unit).hex()
        features(text)
        t1 = time.perf_counter()
        index.search("bench", code, vector, 32, DEFAULT_THRESHOLD)  # as the gateway asks: the route's threshold
        t2 = time.perf_counter()
        embed_ms.append((t1 - t0) * 1000)
        search_ms.append((t2 - t1) * 1000)
        total_ms.append((t2 - t0) * 1000)
    storage.close()
    return {"entries": size, "embed": _percentiles(embed_ms), "search": _percentiles(search_ms),
            "added_to_a_miss": _percentiles(total_ms)}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _served_rss(work: Path, route: object) -> tuple[int, int]:
    """A ``flaregate serve`` process's RSS (KiB) once ready, and after three chat misses."""
    env = {"FLAREGATE_API_KEYS": GATEWAY_KEY, "FLAREGATE_PROVIDERS": json.dumps([{"name": "mock", "kind": "mock"}]),
           "FLAREGATE_ROUTES": json.dumps({"mock-1": route}), "CACHE_TTL_SECONDS": "300"}
    with run_local_gateway(work, env) as server:
        before = _rss_kib(server.process.pid)
        for i in range(3):
            reply = httpx.post(server.base_url + "/v1/chat/completions", timeout=60,
                               headers={"authorization": f"Bearer {GATEWAY_KEY}"},
                               json={"model": "mock-1", "messages": [{"role": "user", "content": f"hello {i}"}]})
            reply.raise_for_status()
        time.sleep(0.5)
        return before, _rss_kib(server.process.pid)


def server_memory(work: Path) -> dict[str, object]:
    """The server with the semantic cache off, and on with the embedded model (loaded on the
    first semantic request)."""
    _, off = _served_rss(work / "off", ["mock"])
    before, after = _served_rss(work / "on", {"targets": ["mock"], "semantic_cache": {"embeddings": "embedded"}})
    return {"rss_semantic_off_mib": round(off / 1024, 1), "rss_on_before_model_mib": round(before / 1024, 1),
            "rss_with_model_mib": round(after / 1024, 1), "model_mib": round((after - before) / 1024, 1),
            "added_over_off_mib": round((after - off) / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--no-server", action="store_true", help="skip the server's memory figure")
    args = parser.parse_args()
    embedder = StaticEmbedder()
    with tempfile.TemporaryDirectory(prefix="fg-semantic-bench-") as tmp:
        work = Path(tmp)
        results: dict[str, object] = {"provisional": True,
                                      "partitions": [partition_bench(s, args.lookups, embedder, work)
                                                     for s in args.sizes]}
        if not args.no_server:
            results["server_memory"] = server_memory(work)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
