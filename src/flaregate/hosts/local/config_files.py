"""Where the local host finds its variables: the same files ``wrangler dev`` reads.

Precedence (later wins): ``wrangler.toml`` ``[vars]`` (or ``[env.NAME.vars]``, which, as in
wrangler, does not inherit the top-level vars), then ``.dev.vars`` (``.dev.vars.NAME``
when it exists), then the process environment.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from ...config import KNOWN_VARS
from ...mcp_gateway.settings import credential_names as mcp_credential_names


def wrangler_vars(path: Path, env: str | None) -> dict[str, str]:
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    table = data.get("env", {}).get(env, {}) if env else data
    if env and not table:
        raise ValueError(f"{path}: no [env.{env}] section")
    return {k: str(v) for k, v in (table.get("vars") or {}).items()}


def dotenv_vars(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def load_vars(config: Path | None, env: str | None, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    values: dict[str, str] = {}
    if config is not None:
        values.update(wrangler_vars(config, env))
        folder = config.parent
        dev_vars = folder / f".dev.vars.{env}" if env and (folder / f".dev.vars.{env}").exists() else folder / ".dev.vars"
        if dev_vars.exists():
            values.update(dotenv_vars(dev_vars))
    # From the process environment take only the gateway's own names and provider keys.
    for name, value in environ.items():
        if name in KNOWN_VARS or name.endswith("_API_KEY"):
            values[name] = value
    for name in mcp_credential_names(values.get("FLAREGATE_MCP_SERVERS")):  # the MCP servers' credential_env
        if name in environ and name not in values:
            values[name] = environ[name]
    return values
