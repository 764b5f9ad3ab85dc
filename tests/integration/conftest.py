"""Real processes: the gateway's standalone server and the mock upstream, on free ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support import processes, wrangler_dev
from tests.support.mock_upstream import MockUpstreamProcess

# Which host the suite runs against: "local" (the standalone server) or "edge" (the Worker
# under `wrangler dev`; skips with the runtime's reason where it cannot start). scripts/e2e.
TARGET = os.environ.get("FLAREGATE_TARGET", "local")

# The memory figure each host reports: the local process's RSS; on the edge the metrics hub
# isolate's WebAssembly memory (an isolate has no process of its own).
MEMORY_FIELD = "wasm_memory_bytes" if TARGET == "edge" else "rss_bytes"
MEMORY_METRIC = ("flaregate_isolate_wasm_memory_bytes" if TARGET == "edge"
                 else "flaregate_process_resident_memory_bytes")

GATEWAY_KEY = "fg-test-gateway-key-0123456789"
UPSTREAM_KEY = "sk-upstream-secret-abcdef"
ADMIN_KEY = "fga-test-admin-key-9876543210"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayServer:
    def __init__(self, base_url: str, process: subprocess.Popen, log_path: Path) -> None:
        self.base_url = base_url
        self.process = process
        self.log_path = log_path

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# Retries, timeouts and deadlines small enough for fault tests to finish quickly; the
# circuit stays closed so every row of a fault matrix reaches its target.
FAILOVER_DEADLINE = 3.0
FAST_FAILOVER = {
    "RATE_LIMIT_CAPACITY": "10000",
    "RATE_LIMIT_REFILL_PER_SECOND": "1000",
    "CACHE_TTL_SECONDS": "0",
    "UPSTREAM_TIMEOUT_SECONDS": "1",
    "UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS": "0.5",
    "UPSTREAM_STREAM_IDLE_TIMEOUT_SECONDS": "0.5",
    "UPSTREAM_DEADLINE_SECONDS": str(FAILOVER_DEADLINE),
    "UPSTREAM_MAX_ATTEMPTS": "2",
    "RETRY_BACKOFF_BASE_SECONDS": "0.02",
    "CIRCUIT_FAILURE_THRESHOLD": "1000",
}


def upstream_env(upstream_url: str, **extra: str) -> dict[str, str]:
    """Providers: the real mock upstream (OpenAI-shaped), a dead port, and the built-in mock."""
    providers = [
        {"name": "upstream", "kind": "openai", "base_url": upstream_url + "/v1", "api_key_env": "UPSTREAM_API_KEY"},
        {"name": "dead", "kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "timeout_seconds": 3},
        {"name": "mock", "kind": "mock"},
    ]
    routes = {"gpt-test": ["upstream"], "gpt-dead": ["dead"], "gpt-failover": ["dead", "upstream"], "mock-1": ["mock"]}
    return {
        "FLAREGATE_API_KEYS": GATEWAY_KEY,
        "FLAREGATE_ADMIN_KEY": ADMIN_KEY,
        "UPSTREAM_API_KEY": UPSTREAM_KEY,
        "FLAREGATE_PROVIDERS": json.dumps(providers),
        "FLAREGATE_ROUTES": json.dumps(routes),
        "RATE_LIMIT_CAPACITY": "10000",
        "RATE_LIMIT_REFILL_PER_SECOND": "1000",
        # Retries stay quick, and failures injected by one test don't open circuits for the next.
        "RETRY_BACKOFF_BASE_SECONDS": "0.02",
        "CIRCUIT_FAILURE_THRESHOLD": "50",
        **extra,
    }


@contextmanager
def run_gateway(data_dir: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> Iterator[GatewayServer]:
    runner = run_edge_gateway if TARGET == "edge" else run_local_gateway
    with runner(data_dir, env, args) as server:
        yield server


@contextmanager
def run_edge_gateway(data_dir: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> Iterator[GatewayServer]:
    """The Worker under `wrangler dev`, configured with the same variables (via --env-file)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env_file = wrangler_dev.write_env_file(data_dir / "test.env", env)
    command = wrangler_dev.wrangler_command(free_port(), free_port(), data_dir / "state", env_file)
    try:
        dev = wrangler_dev.start(command, log_path=data_dir / "wrangler.log", ready_timeout=120)
    except wrangler_dev.RuntimeUnavailable as exc:
        pytest.skip(f"the Workers runtime cannot start here: {exc}")
    try:
        yield GatewayServer(dev.base_url, dev.process, dev.log_path)
    finally:
        wrangler_dev.stop(dev.process)


@contextmanager
def run_local_gateway(data_dir: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> Iterator[GatewayServer]:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    clean = {k: v for k, v in os.environ.items() if not (k.startswith(("FLAREGATE_", "RATE_LIMIT", "CACHE_")) or k.endswith("_API_KEY"))}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flaregate", "serve", "--port", str(port), "--data-dir", str(data_dir), *args],
            env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT,
        )
    server = GatewayServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{server.log()}")
            try:
                if httpx.get(server.base_url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        processes.stop(process)


@pytest.fixture(scope="session")
def upstream() -> Iterator[MockUpstreamProcess]:
    with MockUpstreamProcess() as mock:
        yield mock


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory) -> Iterator[GatewayServer]:
    with run_gateway(tmp_path_factory.mktemp("gateway"), upstream_env(upstream.base_url)) as server:
        yield server


@pytest.fixture
def client(gateway):
    import openai

    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20)
