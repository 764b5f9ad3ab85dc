"""The peer gateways, installed from their registries into bench-only places (never the
project's .venv): LiteLLM's proxy in ``bench/.venv-litellm``, Portkey's gateway in
``bench/.peers/portkey``. Each is pointed at the same mock upstream as Flaregate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .procs import Server, free_port

BENCH = Path(__file__).resolve().parent
LITELLM_VENV = BENCH / ".venv-litellm"
PORTKEY_DIR = BENCH / ".peers" / "portkey"
PORTKEY_PKG = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway"
# Portkey 1.15.2 on Node 20 answers every streamed chat with 500 "TypeError: immutable" when
# npm resolves @hono/node-server >= 1.14 (Portkey-AI/gateway#1389); 1.13.8 works.
PORTKEY_OVERRIDES = {"@hono/node-server": "1.13.8"}
LITELLM_KEY = "sk-litellm-bench-master"
UPSTREAM_KEY = "sk-bench-upstream"


@dataclass
class Peer:
    name: str
    version: str | None = None
    server: Server | None = None
    headers: dict[str, str] = field(default_factory=dict)  # what a client sends through it
    skipped: str | None = None  # why it is not in this run
    dropped: list[str] = field(default_factory=list)  # targets of it that failed their preflight
    setup: str = ""  # how it was installed and configured, for the method notes


def _run(cmd: list[str], timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_litellm() -> str:
    """Install ``litellm[proxy]`` into its own venv once; return its version (raises on failure)."""
    python = LITELLM_VENV / "bin" / "python"
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        print("  installing litellm[proxy] into bench/.venv-litellm (first run only) ...", flush=True)
        if not python.exists():
            _run([sys.executable, "-m", "venv", str(LITELLM_VENV)], 120).check_returncode()
        done = _run([str(python), "-m", "pip", "install", "--quiet", "litellm[proxy]"], 900)
        if done.returncode != 0:
            raise RuntimeError("pip install litellm[proxy] failed: " + _tail(done.stderr))
    out = _run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"], 60)
    if out.returncode != 0:
        raise RuntimeError("litellm is installed but does not import: " + _tail(out.stderr))
    return out.stdout.strip()


def ensure_portkey() -> str:
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("node and npm are needed for Portkey's gateway and are not installed")
    package = PORTKEY_DIR / "package.json"
    installed = (PORTKEY_PKG / "build" / "start-server.js").exists() and package.exists()
    if not installed or json.loads(package.read_text()).get("overrides") != PORTKEY_OVERRIDES:
        print("  installing @portkey-ai/gateway into bench/.peers/portkey (first run only) ...", flush=True)
        PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
        package.write_text(json.dumps({"private": True, "overrides": PORTKEY_OVERRIDES}))
        (PORTKEY_DIR / "package-lock.json").unlink(missing_ok=True)
        done = _run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "@portkey-ai/gateway"], 600, cwd=PORTKEY_DIR)
        if done.returncode != 0:
            raise RuntimeError("npm install @portkey-ai/gateway failed: " + _tail(done.stderr))
    return json.loads((PORTKEY_PKG / "package.json").read_text())["version"]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not (k.startswith(("FLAREGATE_", "RATE_LIMIT", "CACHE_", "LITELLM", "PORTKEY"))
                    or k.endswith("_API_KEY") or k.lower().endswith("_proxy"))}


def litellm_peer(mock_url: str, log_dir: Path) -> Peer:
    peer = Peer("litellm")
    try:
        peer.version = ensure_litellm()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        peer.skipped = str(exc)
        return peer
    config = log_dir / "litellm.yaml"
    # JSON is valid YAML: no YAML library needed here.
    config.write_text(json.dumps({
        "model_list": [{"model_name": "bench-model", "litellm_params": {
            "model": "openai/bench-model", "api_base": mock_url + "/v1", "api_key": UPSTREAM_KEY}}],
        "general_settings": {"master_key": LITELLM_KEY},
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }, indent=1))
    port = free_port()
    env = {**_clean_env(), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "NO_DOCS": "True", "PYTHONUNBUFFERED": "1"}
    cmd = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
           "--port", str(port), "--num_workers", "1", "--telemetry", "False"]
    peer.server = Server("litellm", cmd, env, port, "/health/liveliness", log_dir)
    peer.headers = {"Authorization": f"Bearer {LITELLM_KEY}"}
    peer.setup = (f"litellm[proxy] {peer.version} from PyPI in bench/.venv-litellm; `litellm --config` with one "
                  "openai/bench-model deployment at the mock, master_key auth, no database, 1 worker, "
                  "LITELLM_LOCAL_MODEL_COST_MAP=True, log level ERROR")
    return peer


def portkey_peer(mock_url: str, log_dir: Path) -> Peer:
    peer = Peer("portkey")
    try:
        peer.version = ensure_portkey()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        peer.skipped = str(exc)
        return peer
    port = free_port()
    env = {**_clean_env(), "NODE_ENV": "production"}
    cmd = ["node", str(PORTKEY_PKG / "build" / "start-server.js"), f"--port={port}", "--headless"]
    peer.server = Server("portkey", cmd, env, port, "/", log_dir, cwd=PORTKEY_DIR)
    peer.headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": mock_url + "/v1",
                    "Authorization": f"Bearer {UPSTREAM_KEY}"}
    node = _run(["node", "--version"], 30).stdout.strip()
    peer.setup = (f"@portkey-ai/gateway {peer.version} from npm in bench/.peers/portkey; "
                  f"`node build/start-server.js --headless` on Node {node}, NODE_ENV=production; provider "
                  "openai with x-portkey-custom-host at the mock (Portkey has no gateway key of its own); "
                  "@hono/node-server pinned to 1.13.8 by npm overrides, as later ones break its streams on "
                  "Node 20 (Portkey-AI/gateway#1389)")
    return peer
