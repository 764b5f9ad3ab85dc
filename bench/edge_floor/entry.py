"""A bare proxy: POST the body to UPSTREAM_URL + the request's path, return the answer as is
(a stream passes through without Python touching its chunks). The bench's edge floor.

``FLOOR_OPS`` (comma-separated) adds the runtime operations Flaregate's request path is made
of, one each, so the bench can price them one by one (bench/edge.py):
  ``do``     one RPC into a Python Durable Object that writes one SQLite row (the limiter's shape)
  ``kv``     one KV read (the cache's cold lookup)
  ``cache``  one Cache API match (the warm lookup)
  ``cacheput``  one Cache API put of a new 800-byte entry, through ``ctx.waitUntil``, built as
             Flaregate's warm tier builds it (``Headers``, two ``set`` calls, a converted init)
  ``cacheput1`` the same put with one conversion (the init and its headers as one object)
  ``await10``  ten awaits of an already resolved JS promise (Pyodide's price of one await)
  ``log``    one console.info line of about 400 bytes (the access log)
  ``pump``   the stream's chunks go through Python: read from the upstream, converted to
             bytes and back, written to a TransformStream, each write awaited (Flaregate's relay)
  ``pump-js``     the same without the conversions (the JS chunk is written as it came)
  ``pump-nowait`` the same as ``pump`` without awaiting the writes
  ``par``    the ``do``, ``cache`` and ``kv`` operations that are listed start at once and are
             awaited together (one ``Promise.all``), instead of one after another
  ``sync``   the ``do``, ``cache``, ``kv`` and ``await10`` promises are waited for with
             ``pyodide.ffi.run_sync`` (JSPI: the Python stack is suspended) instead of ``await``
  ``tee``    the client gets one branch of the upstream body untouched; Python reads the other
             chunk by chunk (what an observe-only relay would cost)
  ``teebyob`` the same, the copy read through a BYOB reader into a 64 KiB buffer: one read
             takes every byte the copy holds by then, not one chunk
  ``teeatleast`` the same with workerd's ``readAtLeast(16 KiB)``: a read waits for that much
             (or the end)
"""

import json
from typing import Any
from urllib.parse import urlsplit

import js
from pyodide.ffi import create_proxy, run_sync, to_js
from workers import DurableObject, Response, WorkerEntrypoint, fetch

LOG_LINE = json.dumps({"level": "info", "logger": "flaregate.access", "msg": "request", "status": 200,
                       "request_id": "req_0123456789abcdef01234567", "trace_id": "0" * 32, "model": "bench-model",
                       "provider": "mock-upstream", "key_id": "key_0123456789abcdef", "cache": "MISS",
                       "latency_ms": 1.5, "upstream_ms": 1.0, "overhead_ms": 0.5, "client_ip": "127.0.0.0",
                       "stream": False, "tokens_in": 12, "tokens_out": 20})


class Counter(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS c (k TEXT PRIMARY KEY, n INTEGER)")

    def bump(self, payload: str) -> str:
        self.ctx.storage.sql.exec("INSERT INTO c VALUES ('k', 1) ON CONFLICT(k) DO UPDATE SET n = n + 1")
        return payload


_ignore: Any = None


def _cache_url() -> str:
    return "https://floor.internal/cache/" + str(js.crypto.randomUUID())


async def _pump(body: Any, writer: Any, mode: str) -> None:
    global _ignore
    reader = body.getReader()
    while True:
        result = await reader.read()
        if result.done:
            break
        if mode == "pump-js":
            await writer.write(result.value)
        elif mode == "pump-nowait":
            if _ignore is None:
                _ignore = create_proxy(lambda _e: None)
            writer.write(to_js(result.value.to_bytes())).catch(_ignore)
        else:
            await writer.write(to_js(result.value.to_bytes()))
    await writer.close()


async def _observe(body: Any) -> None:
    reader = body.getReader()
    seen = 0
    while True:
        result = await reader.read()
        if result.done:
            break
        seen += len(result.value.to_bytes())


async def _observe_byob(body: Any, at_least: int = 0) -> None:
    reader = body.getReader(mode="byob")
    buffer = js.ArrayBuffer.new(65536)
    seen = 0
    while True:
        view = js.Uint8Array.new(buffer)
        result = await (reader.readAtLeast(at_least, view) if at_least else reader.read(view))
        if result.done:
            break
        seen += len(result.value.to_bytes())
        buffer = result.value.buffer  # the read took the buffer over: its view gives it back


class Default(WorkerEntrypoint):
    async def fetch(self, request: Any) -> Any:
        if request.method != "POST":
            return Response("ok")
        env = self.env
        ops = str(getattr(env, "FLOOR_OPS", "") or "").split(",")
        raw = getattr(env, "_env", env)
        starts = []
        if "do" in ops:
            starts.append(lambda: raw.COUNTER.getByName("partition").bump("{}"))
        if "cache" in ops:
            starts.append(lambda: js.caches.default.match("https://floor.internal/cache/key"))
        if "kv" in ops:
            starts.append(lambda: raw.CACHE.get("floor-key"))
        if "par" in ops:
            await js.Promise.all(to_js([start() for start in starts]))
        elif "sync" in ops:
            for start in starts:
                run_sync(start())
        else:
            for start in starts:
                await start()
        if "await10" in ops:
            for _ in range(10):
                if "sync" in ops:
                    run_sync(js.Promise.resolve(0))
                else:
                    await js.Promise.resolve(0)
        upstream = await fetch(str(env.UPSTREAM_URL) + urlsplit(str(request.url)).path, method="POST",
                               headers={"content-type": "application/json",
                                        "authorization": "Bearer " + str(env.UPSTREAM_KEY)},
                               body=await request.text())
        if "log" in ops:
            js.console.info(LOG_LINE)
        if "cacheput" in ops:
            headers = js.Headers.new()
            headers.set("content-type", "application/json")
            headers.set("cache-control", "max-age=300")
            init = to_js({"status": 200, "headers": headers}, dict_converter=js.Object.fromEntries)
            self.ctx.waitUntil(js.caches.default.put(_cache_url(), js.Response.new(LOG_LINE + LOG_LINE, init)))
        if "cacheput1" in ops:
            init = to_js({"headers": {"content-type": "application/json", "cache-control": "max-age=300"}},
                         dict_converter=js.Object.fromEntries)
            self.ctx.waitUntil(js.caches.default.put(_cache_url(), js.Response.new(LOG_LINE + LOG_LINE, init)))
        content_type = upstream.headers.get("content-type") or "application/json"
        body = upstream.body
        mode = next((op for op in ops if op.startswith("pump")), None)
        if mode and "event-stream" in content_type:
            stream = js.TransformStream.new()
            self.ctx.waitUntil(_pump(upstream.js_object.body, stream.writable.getWriter(), mode))
            body = stream.readable
        elif any(op.startswith("tee") for op in ops) and "event-stream" in content_type:
            client, observer = upstream.js_object.body.tee().object_values()
            self.ctx.waitUntil(_observe_byob(observer, 16384 if "teeatleast" in ops else 0)
                               if "teebyob" in ops or "teeatleast" in ops else _observe(observer))
            body = client
        return Response(body, status=upstream.status, headers={"content-type": content_type})
