"""Packaging: what `wrangler deploy --dry-run` would upload, per environment (offline).

The upload must hold entry.py, both Durable Object modules and every module entry.py
imports transitively (found by walking the import graph with ``ast``). Vars must be valid
gateway settings in every environment.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from flaregate.config import KNOWN_VARS, settings_from_vars

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
WRANGLER = ROOT / "node_modules" / ".bin" / "wrangler"
MIN_NODE = (22, 12)  # wrangler 4.164.0's engines.node

EXPECTED = {  # environment -> (ENVIRONMENT, LOG_LEVEL, RATE_LIMIT_PER_HOUR)
    None: ("development", "debug", "1000"),
    "staging": ("staging", "info", "5000"),
    "production": ("production", "warn", "50000"),
}


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_modules(entry: str = "entry") -> set[str]:
    """First-party modules (files under src/) that importing ``entry`` executes."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from pkg import name` may name a submodule.
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                todo.extend(m for m in _with_parents(target) if _module_file(m))
    return seen


def relative_path(module: str) -> str:
    path = _module_file(module)
    assert path is not None
    return path.relative_to(SRC).as_posix()


def test_import_graph_reaches_the_core_and_the_durable_objects():
    modules = imported_modules()
    assert {"entry", "durable_objects.rate_limiter", "durable_objects.metrics_hub",
            "flaregate.gateway", "flaregate.hub.aggregator", "flaregate.hosts.edge.worker",
            "flaregate.providers.mock"} <= modules
    assert not any(m.startswith("flaregate.hosts.local") for m in modules)  # edge never loads it


@pytest.mark.parametrize("env", [None, "staging", "production"])
def test_wrangler_vars_are_valid_gateway_settings(env: str | None):
    config = tomllib.loads((ROOT / "wrangler.toml").read_text())
    section = config if env is None else config["env"][env]
    vars = section["vars"]
    assert set(vars) <= set(KNOWN_VARS)
    assert not {"FLAREGATE_API_KEYS", "OPENAI_API_KEY"} & set(vars)  # secrets, never vars
    settings = settings_from_vars(vars)
    environment, log_level, per_hour = EXPECTED[env]
    assert (settings.environment, settings.log_level, vars["RATE_LIMIT_PER_HOUR"]) == (
        environment, log_level, per_hour)
    # Bindings are not inherited by [env.*]: each environment declares all of them.
    assert [kv["binding"] for kv in section["kv_namespaces"]] == ["CACHE"]
    assert {b["name"]: b["class_name"] for b in section["durable_objects"]["bindings"]} == {
        "RATE_LIMITER": "RateLimiter", "METRICS_HUB": "MetricsHub", "SECURITY_STORE": "SecurityStore",
        "BATCH_STORE": "BatchStore", "BATCH_LANE": "BatchLane", "SEMANTIC_INDEX": "SemanticIndex"}
    assert [r2["binding"] for r2 in section["r2_buckets"]] == ["FILES"]  # the Files API's uploads
    # Workers AI: bound where deployed; not in development, where it would make `wrangler dev`
    # need a Cloudflare token for a remote session.
    assert section.get("ai") == ({"binding": "AI"} if env else None)


def _wrangler_or_skip() -> None:
    if not WRANGLER.exists():
        pytest.skip("node_modules/.bin/wrangler is missing: run `npm ci` at the repo root")
    node = shutil.which("node")
    found = subprocess.run([node, "--version"], capture_output=True, text=True).stdout if node else ""
    match = re.match(r"v(\d+)\.(\d+)", found)
    if not match or (int(match[1]), int(match[2])) < MIN_NODE:
        pytest.skip(f"wrangler 4.164.0 needs Node.js >= 22.12 (found {found.strip() or 'none'})")


@pytest.mark.parametrize("env", [None, "staging", "production"])
def test_dry_run_bundle(env: str | None, tmp_path: Path):
    _wrangler_or_skip()
    outdir = tmp_path / "out"
    command = ["npx", "--no-install", "wrangler", "deploy", "--dry-run", "--outdir", str(outdir)]
    if env:
        command += ["--env", env]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "WRANGLER_SEND_METRICS": "false"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--dry-run: exiting now." in result.stdout

    uploaded = {p.relative_to(outdir).as_posix() for p in outdir.rglob("*.py")}
    expected = {relative_path(m) for m in imported_modules()}
    assert {"entry.py", "durable_objects/rate_limiter.py", "durable_objects/metrics_hub.py",
            "flaregate/hosts/edge/worker.py"} <= expected
    missing = expected - uploaded
    assert not missing, f"modules entry.py imports but wrangler would not upload: {sorted(missing)}"
    # The dashboard's files ride along as Text modules (wrangler.toml [[rules]]), byte for byte.
    static = SRC / "flaregate" / "console" / "static"
    for file in sorted(static.iterdir()):
        bundled = outdir / "flaregate" / "console" / "static" / file.name
        assert bundled.is_file() and bundled.read_bytes() == file.read_bytes(), file.name

    environment, log_level, per_hour = EXPECTED[env]
    out = result.stdout
    assert f'env.ENVIRONMENT ("{environment}")' in out
    assert f'env.LOG_LEVEL ("{log_level}")' in out
    assert f'env.RATE_LIMIT_PER_HOUR ("{per_hour}")' in out
    assert "env.RATE_LIMITER (RateLimiter)" in out
    assert "env.METRICS_HUB (MetricsHub)" in out
    assert "env.SECURITY_STORE (SecurityStore)" in out
    assert "env.CACHE (" in out
    assert bool(re.search(r"env\.AI\s+AI", out)) == bool(env)
