"""Durable Object RPC with one JSON string each way.

A dict or list sent over RPC is walked by the Python Workers SDK four times per call on
each side (None -> null and a type check before ``to_js``; ``to_py`` with a Python
converter and null -> None after it), each walk Python code under Pyodide, and the runtime
then structured-clones every node. A str crosses as it is, and ``json`` (C code in
Pyodide's CPython) encodes and decodes it, so every call here carries one string.

The caller also goes to the raw JS binding, not through the SDK's per-request wrappers of
``env`` (a wrapper object and a constructor-name check per binding, per stub, per method).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar

try:  # Pyodide >= 0.26 hands JavaScript's null to Python as ``jsnull``, not None
    from pyodide.ffi import jsnull  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # pragma: no cover - older Pyodide, and CPython's stand-in
    jsnull = None

_Method = TypeVar("_Method", bound=Callable[..., Any])


def encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def decode(text: Any) -> Any:
    return json.loads(str(text))


def raw_env(env: Any) -> Any:
    """The JS env under the SDK's wrapper (which keeps it as ``_env``), else ``env`` itself."""
    return getattr(env, "_env", env)


def is_null(value: Any) -> bool:
    return value is None or (jsnull is not None and value is jsnull)


async def call(stub: Any, method: str, *args: Any) -> Any:
    """``stub.method(*args)`` over RPC: the arguments as one JSON array, the answer decoded."""
    return decode(await getattr(stub, method)(encode(list(args))))


def json_method(method: _Method) -> _Method:
    """A Durable Object method as :func:`call` reaches it: one JSON array of arguments in,
    the JSON of the answer out."""

    @functools.wraps(method)
    def sync_wrapper(self: Any, payload: str) -> str:
        return encode(method(self, *decode(payload)))

    @functools.wraps(method)
    async def async_wrapper(self: Any, payload: str) -> str:
        return encode(await method(self, *decode(payload)))

    wrapper: Any = async_wrapper if inspect.iscoroutinefunction(method) else sync_wrapper
    wrapper.json_rpc = True
    # The runtime may call with pyodide's relaxed_call, which reads the signature: it must
    # be the wrapper's own (one payload), not the wrapped method's.
    del wrapper.__wrapped__
    return wrapper
