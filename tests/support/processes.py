"""Stopping a child process the tests started: terminate, then kill if it lingers."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
