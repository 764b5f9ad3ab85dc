"""Waiting in tests for something that happens in the background (a hub batch, a job)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(read: Callable[[], T], done: Callable[[T], bool], seconds: float = 15.0,
               interval: float = 0.1) -> T:
    """``read()`` again until ``done`` holds of its value or ``seconds`` pass; the last value
    (the test's assertion then says what was wrong)."""
    deadline = time.monotonic() + seconds
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)
