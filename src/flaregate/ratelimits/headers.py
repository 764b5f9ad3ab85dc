"""What the client is told about its limits, in the two vocabularies clients read.

- OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``: for each unit, the
  policy closest to refusing (the one that refused, else the least remaining).
- The IETF ``RateLimit-Policy`` and ``RateLimit`` fields of
  draft-ietf-httpapi-ratelimit-headers-10 (structured-field lists; -11 keeps the syntax),
  e.g. ``RateLimit-Policy: "default";q=100;w=360`` and ``RateLimit: "default";r=99;t=4``.
  ``w`` is the window (a bucket's full-refill time), ``t`` the seconds until the quota is
  fully back (until the request fits, on a 429). Only request-unit policies appear there:
  the draft's quota-unit registry has no unit for LLM tokens or money.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

OPENAI_UNITS = ("requests", "tokens")


def duration(seconds: float) -> str:
    """OpenAI's reset format: '1s', '6m0s', '0.5s'."""
    if seconds < 60:
        return f"{max(0.0, round(seconds, 3)):g}s"
    minutes, secs = divmod(int(math.ceil(seconds)), 60)
    return f"{minutes}m{secs}s"


def _binding(results: list[dict[str, Any]]) -> dict[str, Any]:
    refused = [r for r in results if not r["allowed"]]
    if refused:
        return max(refused, key=lambda r: r["retry_after_seconds"])
    return min(results, key=lambda r: (r["remaining"], r["limit"]))


def openai_headers(results: Iterable[dict[str, Any]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    results = list(results)
    for unit in OPENAI_UNITS:
        mine = [r for r in results if r["unit"] == unit]
        if not mine:
            continue
        chosen = _binding(mine)
        headers[f"x-ratelimit-limit-{unit}"] = str(chosen["limit"])
        headers[f"x-ratelimit-remaining-{unit}"] = str(chosen["remaining"])
        headers[f"x-ratelimit-reset-{unit}"] = duration(chosen["reset_seconds"])
    return headers


def _seconds(value: float) -> int:
    return max(0, math.ceil(value - 1e-9))


def ietf_headers(results: Iterable[dict[str, Any]]) -> dict[str, str]:
    policies, limits = [], []
    for r in results:
        if r["unit"] != "requests":
            continue
        name = r["policy"]  # policy names are [A-Za-z0-9_.-]: a valid sf-string as is
        policies.append(f'"{name}";q={int(r["limit"])};w={max(1, _seconds(r["window_seconds"]))}')
        reset = r["reset_seconds"] if r["allowed"] else r["retry_after_seconds"]
        limits.append(f'"{name}";r={int(r["remaining"])};t={_seconds(reset)}')
    if not policies:
        return {}
    return {"ratelimit-policy": ", ".join(policies), "ratelimit": ", ".join(limits)}


def retry_after(results: Iterable[dict[str, Any]]) -> int:
    """Seconds for ``Retry-After`` (at least 1): when every refusing policy admits again."""
    waits = [r["retry_after_seconds"] for r in results if not r["allowed"]]
    return max(1, _seconds(max(waits, default=1.0)))
