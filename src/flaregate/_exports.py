"""Lazy package exports: a package names its public objects without importing its modules.

``config`` imports settings models from ``ratelimits`` and ``routing``, whose other modules
import ``config``; eager re-exports in the packages' ``__init__`` would make that a cycle.
A module-level ``__getattr__`` (PEP 562) imports a name's module on first use instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """``__getattr__`` for ``package``: ``names`` maps each public name to its module."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
