"""What the Workers runtime lets the hub report about its own memory.

An isolate has no process of its own (no RSS), but Python runs inside Pyodide's
WebAssembly instance, whose linear memory holds the whole Python heap: that size is
reported as ``wasm_memory_bytes`` (it only grows; workerd's isolate limit is 128 MB).
It is the metrics hub's isolate: each Worker isolate has its own.
"""

from __future__ import annotations


class IsolateStats:
    def sample(self) -> dict[str, float]:
        try:
            import pyodide_js  # type: ignore[import-not-found]

            heap = pyodide_js._module.HEAPU8
            return {"wasm_memory_bytes": float(heap.length)}
        except Exception:  # outside Pyodide, or a runtime that hides its heap
            return {}
