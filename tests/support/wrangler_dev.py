"""Start the Worker under `wrangler dev` (or `pywrangler dev`) for the e2e tier.

Where the Python runtime cannot start (here: no network for the Pyodide bundle), starting
raises RuntimeUnavailable with the reason the tool printed, and the tests skip with it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_READY = re.compile(r"Ready on (http://\S+)")
# Lines that say why the runtime did not start, most specific first.
_REASONS = (
    re.compile(r"Pyodide bundle failed.*", re.I),
    re.compile(r"failed to lookup address.*", re.I),
    re.compile(r"requires at least Node\.js.*", re.I),
    re.compile(r"✘ \[ERROR\].*"),
    re.compile(r"^Error: .*", re.M),
)


class RuntimeUnavailable(Exception):
    """The Worker runtime could not start here; the message says why."""


@dataclass
class DevServer:
    base_url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return _ANSI.sub("", self.log_path.read_text(errors="replace"))


def failure_reason(output: str, returncode: int | None) -> str:
    text = _ANSI.sub("", output)
    for pattern in _REASONS:
        match = pattern.search(text)
        if match:
            return match.group(0).strip()[:300]
    tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
    return f"exited with code {returncode}: {tail[:300]}" if returncode is not None else tail[:300]


def wrangler_command(port: int, inspector_port: int, state_dir: Path, env_file: Path) -> list[str]:
    """`pywrangler dev` when available (it vendors pydantic first), else wrangler from npm."""
    flags = ["--ip", "127.0.0.1", "--port", str(port), "--inspector-port", str(inspector_port),
             "--persist-to", str(state_dir), "--env-file", str(env_file), "--show-interactive-dev-session=false"]
    pywrangler = shutil.which("pywrangler")
    if pywrangler:
        return [pywrangler, "dev", *flags]
    wrangler = REPO / "node_modules" / ".bin" / "wrangler"
    if not wrangler.exists():
        raise RuntimeUnavailable("wrangler is not installed (run scripts/bootstrap)")
    return [str(wrangler), "dev", *flags]


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    lines = [f"{name}='{value}'" for name, value in values.items() if "'" not in value]
    path.write_text("\n".join(lines) + "\n")
    return path


def start(command: list[str], *, log_path: Path, ready_timeout: float = 60.0, cwd: Path = REPO,
          env: dict[str, str] | None = None, health_url: str | None = None) -> DevServer:
    """Start the command and wait until it prints 'Ready on URL' and answers, or give up."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + ready_timeout
    base_url = None
    while True:
        output = log_path.read_text(errors="replace")
        if process.poll() is not None:
            raise RuntimeUnavailable(failure_reason(output, process.returncode))
        match = _READY.search(_ANSI.sub("", output))
        base_url = base_url or (match.group(1).rstrip("/") if match else None)
        if base_url:
            try:
                httpx.get(health_url or base_url + "/health", timeout=2)
                return DevServer(base_url, process, log_path)
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            stop(process)
            raise RuntimeUnavailable(f"not ready within {ready_timeout:g}s: {failure_reason(output, None)}")
        time.sleep(0.2)


def stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop the whole process group (wrangler starts workerd as a child)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
