"""The floors of the core import downwards only.

- ``config`` assembles the settings models each concept owns (``<concept>/settings.py``);
  none of the modules it imports imports it back, so it loads first without a cycle.
- The ground floor (redaction, accounting, errors, http, clock, ports, _variables) imports
  no concept package, only the concepts' settings modules.
- No ``import`` inside a function, save the lazy imports listed below with their reasons
  (host-only dependencies, a command's own modules, cold-start savings).

The import checks run in a fresh interpreter; the rest reads the source with ``ast``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "flaregate"

GROUND_FLOOR = frozenset({
    "flaregate.redaction", "flaregate.accounting", "flaregate.errors", "flaregate.http",
    "flaregate.clock", "flaregate.ports", "flaregate._variables",
})

_CLI = "the local host's command line: `serve` loads the server, `keys` only the key store"
_KEYS = "`flaregate keys` and the first start: only the chosen store (SQLite or Redis) is loaded"
_REDIS = "redis is an optional dependency of the local host, loaded only with FLAREGATE_REDIS_URL"
_PYODIDE = "the Workers runtime (Pyodide) only: absent under CPython"
_COLD = "loaded on first use: keeps the Worker's cold start lean"
_LISTING = "`python -m flaregate.routes`: the listing builds a Gateway, which imports this module"

# (module, the module it imports inside a function, or "*": any): why that import is lazy.
_MCP = "built only when FLAREGATE_MCP_SERVERS names servers: a Worker without MCP loads none of it"
_REALTIME = "loaded when /v1/realtime is first upgraded or a client secret minted: a Worker without Realtime loads none of it"
_SEMANTIC = "built only when a route turns semantic_cache on: a Worker without one loads none of it"
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("flaregate.hosts.local.cli", "uvicorn"): "the standalone server's dependency, needed by `serve` only",
    ("flaregate.hosts.local.cli", "aiohttp"): "the standalone server's dependency, needed by `serve` only",
    ("flaregate.hosts.local.cli", "pydantic"): _CLI,
    ("flaregate.hosts.local.cli", "flaregate.hosts.local.app"): _CLI,
    ("flaregate.hosts.local.cli", "flaregate.hosts.local.config_files"): _CLI,
    ("flaregate.hosts.local.cli", "flaregate.hosts.local.files"): _CLI,
    ("flaregate.hosts.local.cli", "flaregate.hosts.local.keys"): _CLI,
    ("flaregate.hosts.local.cli", "flaregate.hosts.local.server"): _CLI,
    ("flaregate.hosts.local.cli", "flaregate.hosts.local.replicas"): _CLI,
    ("flaregate.hosts.local.cli", "flaregate.observability.logs"): _CLI,
    ("flaregate.hosts.local.cli", "flaregate.security.secret_strength"): _CLI,
    ("flaregate.hosts.local.server", "uvicorn"): "the standalone server's dependency",
    ("flaregate.hosts.local.static_embedder", "wordllama"): "the semantic cache's model: loaded only when a route uses it",
    ("flaregate.hosts.local.host_stats", "resource"): "POSIX only: absent on some platforms",
    ("flaregate.hosts.local.keys", "asyncio"): _KEYS,
    ("flaregate.hosts.local.keys", "sys"): _KEYS,
    ("flaregate.hosts.local.keys", "json"): _KEYS,
    ("flaregate.hosts.local.keys", "flaregate.clock"): _KEYS,
    ("flaregate.hosts.local.keys", "flaregate.hosts.local.redis_backend"): _KEYS,
    ("flaregate.hosts.local.keys", "flaregate.hosts.local.storage"): _KEYS,
    ("flaregate.hosts.local.keys", "flaregate.hosts.local.files"): _KEYS,
    ("flaregate.hosts.local.redis_backend", "redis.asyncio"): _REDIS,
    ("flaregate.hosts.local.redis_backend", "redis.asyncio.retry"): _REDIS,
    ("flaregate.hosts.local.redis_backend", "redis.backoff"): _REDIS,
    ("flaregate.hosts.local.redis_backend", "redis.exceptions"): _REDIS,
    ("flaregate.hosts.local.redis_backend", "flaregate.security.access"): "a replica's first key only",
    ("flaregate.hosts.edge.event_loop", "js"): _PYODIDE,
    ("flaregate.hosts.edge.event_loop", "pyodide.ffi"): _PYODIDE,
    ("flaregate.hosts.edge.event_loop", "pyodide.webloop"): _PYODIDE,
    ("flaregate.hosts.edge.event_loop", "pyodide_js._api"): _PYODIDE,
    ("flaregate.hosts.edge.event_loop", "_pyodide._future_helper"): _PYODIDE,
    ("flaregate.hosts.edge.isolate_stats", "pyodide_js"): _PYODIDE,
    ("flaregate.console.endpoints", "flaregate.console.request_log_endpoints"): _COLD,
    ("flaregate.console.endpoints", "flaregate.console.spend_report"): _COLD,
    ("flaregate.console.team_spend", "flaregate.console.spend_report"): _COLD,
    ("flaregate.console.endpoints", "flaregate.console.dashboard"): _COLD,
    ("flaregate.hosts.edge.ports", "flaregate.hub.shards"): "HUB_SHARDS > 1 only: " + _COLD,
    ("flaregate.gateway", "flaregate.batches.api"): "built on the first Files or Batches request: " + _COLD,
    ("flaregate.gateway", "flaregate.mcp_gateway.endpoint"): _MCP,
    ("flaregate.gateway", "flaregate.mcp_gateway.pinning"): _MCP,
    ("flaregate.realtime.entry", "flaregate.realtime.api"): _REALTIME,
    ("flaregate.hosts.edge.worker", "flaregate.hosts.edge.realtime"): _REALTIME,
    ("flaregate.security.store", "flaregate.realtime.store"): _REALTIME + " (the store's tables too)",
    ("flaregate.gateway", "flaregate.cache.semantic.setup"): _SEMANTIC,
    ("flaregate.gateway", "flaregate.cache.semantic.admin"): _SEMANTIC,
    ("flaregate.hosts.edge.objects", "flaregate.cache.semantic.index"): _SEMANTIC,
    ("flaregate.hosts.local.app", "flaregate.cache.semantic.index"): _SEMANTIC,
    ("flaregate.hosts.local.app", "flaregate.hosts.local.semantic_redis"): _SEMANTIC,
    # Every lazy import of the module, while the route table is being built (list them then).
    ("flaregate.routes", "*"): "pydantic.json_schema: only /openapi.json needs it; " + _LISTING,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text(), str(p))) for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()
PACKAGES = {name for name, (path, _) in MODULES.items() if path.name == "__init__.py"}


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute modules an import statement loads (``from pkg import submodule`` included)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if module in PACKAGES else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    subs = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
    return [target, *subs]


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(module: str, tree: ast.Module) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(imports that run when the module loads, imports inside function bodies), with line numbers."""
    at_load: list[tuple[int, str]] = []
    in_functions: list[tuple[int, str]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                walk(child, True)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    walk(other, in_function)
            elif isinstance(child, ast.Import | ast.ImportFrom):
                found = [(child.lineno, t) for t in _targets(module, child)]
                (in_functions if in_function else at_load).extend(found)
            else:
                walk(child, in_function)

    walk(tree, False)
    return at_load, in_functions


def _concept(module: str) -> str | None:
    """The concept package a flaregate module belongs to (``flaregate.routing``), if any."""
    parts = module.split(".")
    package = ".".join(parts[:2])
    return package if len(parts) >= 2 and package in PACKAGES and package != "flaregate" else None


def _is_settings_module(module: str) -> bool:
    return _concept(module) is not None and module.rsplit(".", 1)[-1] == "settings"


def test_config_imports_first_in_a_fresh_interpreter():
    run = subprocess.run([sys.executable, "-c", "import flaregate.config"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr


def test_every_module_imports_first_without_a_cycle():
    """Each module (but the Worker-only hosts/edge) imported first into a clean slate."""
    names = sorted(name for name in MODULES if not name.startswith("flaregate.hosts.edge")
                   and not name.endswith("__main__"))
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'flaregate' or m.startswith('flaregate.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_no_import_inside_a_function_but_the_listed_lazy_ones():
    found = [f"{path.relative_to(SRC)}:{line}: {module} imports {target}"
             for module, (path, tree) in MODULES.items()
             for line, target in _imports(module, tree)[1]
             if (module, target) not in LAZY_IMPORTS and (module, "*") not in LAZY_IMPORTS]
    assert found == [], "imports inside functions (a cycle to untangle, or a lazy import to list):\n" + \
        "\n".join(found)


def test_config_is_imported_by_no_module_it_imports():
    """Every flaregate module ``config`` loads, directly or not, does without ``config``: not
    when it loads, nor later in a function (an import moved there would hide the cycle)."""
    loads = {name: {t for _, t in (*at_load, *in_functions)}
             for name, (_, tree) in MODULES.items() for at_load, in_functions in [_imports(name, tree)]}
    seen: set[str] = set()
    todo = ["flaregate.config"]
    while todo:
        for target in loads.get(todo.pop(), ()):
            parts = target.split(".")
            for i in range(2, len(parts) + 1):  # a submodule loads its packages first
                name = ".".join(parts[:i])
                if name in MODULES and name not in seen:
                    seen.add(name)
                    todo.append(name)
    back = sorted(name for name in seen if "flaregate.config" in loads[name])
    assert back == []


@pytest.mark.parametrize("module", sorted(GROUND_FLOOR))
def test_the_ground_floor_imports_no_concept(module):
    """Only other ground-floor modules and the concepts' settings modules (and their packages'
    ``__init__``, which load with them: docstrings only)."""
    assert module in MODULES
    seen: set[str] = set()
    todo = [module]
    wrong = []
    while todo:
        current = todo.pop()
        path, tree = MODULES[current]
        for line, target in _imports(current, tree)[0]:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name not in MODULES or name in seen or name == "flaregate":
                    continue
                seen.add(name)
                if name in GROUND_FLOOR or _is_settings_module(name) or name == _concept(name):
                    todo.append(name)
                else:
                    wrong.append(f"{path.relative_to(SRC)}:{line}: {current} loads {name}")
    assert wrong == []


def test_settings_models_are_imported_from_their_concept():
    """``config`` only assembles: from it, modules take ``Settings`` and its loading helpers,
    never a concept's settings model."""
    allowed = {"Settings", "ConfigError", "InsecureConfigError", "settings_from_vars", "KNOWN_VARS",
               "provider_key_names"}
    found = []
    for module, (path, tree) in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and "flaregate.config" in _targets(module, node)[:1]:
                found += [f"{path.relative_to(SRC)}:{node.lineno}: {alias.name}" for alias in node.names
                          if alias.name not in allowed]
    assert found == []


# What of the Realtime API a Worker loads before its first session: the paths and routes
# (entry.py) and the settings config.py assembles; the rest (about 55 KB) is lazy (_REALTIME).
REALTIME_AT_START = frozenset({"flaregate.realtime", "flaregate.realtime.entry", "flaregate.realtime.settings"})
# The modules the Worker's entry (src/entry.py) and its Durable Objects (src/durable_objects/) load.
WORKER_ROOTS = ("flaregate.hosts.edge.worker", "flaregate.hosts.edge.objects", "flaregate.hosts.edge.rpc",
                "flaregate.hosts.edge.batch_object")


def _loaded_at_start(roots: tuple[str, ...]) -> set[str]:
    """Every flaregate module that loading ``roots`` loads (imports run at load, not in functions)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        current = todo.pop()
        if current in seen or current not in MODULES:
            continue
        seen.add(current)
        for _, target in _imports(current, MODULES[current][1])[0]:
            parts = target.split(".")
            todo += [".".join(parts[:i]) for i in range(2, len(parts) + 1)]
    return seen


def test_a_worker_start_loads_none_of_the_realtime_modules():
    """The Worker's start-up, read from the source: of the Realtime package only the paths and
    settings (the relay, admission, metering, client secrets, the edge host's sockets: lazy)."""
    loaded = _loaded_at_start(WORKER_ROOTS)
    assert "flaregate.gateway" in loaded and "flaregate.security.store" in loaded  # the roots are the Worker's
    realtime = {m for m in loaded if m.startswith("flaregate.realtime") or m == "flaregate.hosts.edge.realtime"}
    assert realtime == REALTIME_AT_START


_REALTIME_RUNTIME = """
import asyncio, json, sys
from flaregate.http import Headers, Request
from tests.support.security import CONFIG_KEY, SecureRig

rig = SecureRig({})  # mock-1: the in-process mock provider
auth = ("authorization", f"Bearer {CONFIG_KEY}")

def loaded():
    return sorted(m for m in sys.modules if m.startswith("flaregate.realtime."))

async def main():
    chat = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}).encode()
    answers = [(await rig.gateway.handle(Request("POST", "/v1/chat/completions",
                                                 Headers([auth, ("content-type", "application/json")]), chat))).status,
               (await rig.gateway.handle(Request("GET", "/v1/realtime", Headers([auth]), b"", {"model": "mock-1"}))).status]
    before = loaded()
    body = json.dumps({"session": {"type": "realtime", "model": "mock-1"}}).encode()
    minted = await rig.gateway.handle(Request("POST", "/v1/realtime/client_secrets",
                                              Headers([auth, ("content-type", "application/json")]), body))
    answers.append(minted.status)
    print(json.dumps({"answers": answers, "before": before, "after": loaded()}))

asyncio.run(main())
"""


def test_a_gateway_serving_chat_imports_no_realtime_module_until_one_is_used():
    """In a fresh interpreter: a chat completion and a plain GET /v1/realtime (426) load no
    Realtime module but the start-up ones; the first client secret loads the API."""
    run = subprocess.run([sys.executable, "-c", _REALTIME_RUNTIME], capture_output=True, text=True, timeout=120,
                         cwd=SRC.parent)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["answers"][:2] == [200, 426]
    assert set(result["before"]) == REALTIME_AT_START - {"flaregate.realtime"}
    assert "flaregate.realtime.api" in result["after"] and "flaregate.realtime.relay" in result["after"]
    assert result["answers"][2] in (200, 400)  # minted, or refused by the core: either way the API loaded
