"""Tier 3: the Worker entry and Durable Objects under CPython, with the runtime faked.

The three runtime-only modules get small hand-written stand-ins (only the JS globals our
code touches), so tests can assert what was written to streams and sockets. Bindings are
fakes with the same call shapes as the real ones; Durable Object namespaces forward RPC to
in-process instances of the real DO classes. ``workers.Response`` / ``workers.fetch`` need
JS, so they are swapped for fakes (our modules look them up on ``workers`` at call time).
"""

from __future__ import annotations

import asyncio
import http.client
import inspect
import json
import logging
import sqlite3
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


# -- the runtime-only modules ------------------------------------------------------------------
class FakeWriter:
    """The writable side of a TransformStream: records every write and the close. Its
    ``closed`` is the writer's promise (a future here): fulfilled by close(), rejected when
    the runtime cancels the readable side because the client left (``leave()``)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.is_closed = False
        self.fail = False  # the client went away, and the runtime did not say so yet
        self._closed: asyncio.Future[None] | None = None

    @property
    def closed(self) -> asyncio.Future[None]:
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
            if self.is_closed:
                self._closed.set_result(None)
        return self._closed

    async def write(self, chunk: Any) -> None:
        assert not self.is_closed, "write after close"
        if self.fail:
            raise RuntimeError("Network connection lost.")
        self.chunks.append(bytes(chunk))

    async def close(self) -> None:
        self.is_closed = True
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def leave(self) -> None:
        """The client disconnects: the stream errors, every write fails from now on."""
        self.fail = True
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        if not self._closed.done():
            self._closed.set_exception(RuntimeError("Network connection lost."))


class FakeReadable:
    def __init__(self, writer: FakeWriter) -> None:
        self.writer = writer

    def data(self) -> bytes:
        return b"".join(self.writer.chunks)


class FakeTransformStream:
    created: list[FakeTransformStream] = []

    def __init__(self) -> None:
        writer = FakeWriter()
        self.writable = types.SimpleNamespace(getWriter=lambda: writer)
        self.readable = FakeReadable(writer)

    @classmethod
    def new(cls) -> FakeTransformStream:
        stream = cls()
        cls.created.append(stream)
        return stream


class FakeJsObject(dict):
    """A plain JS object as a JsProxy: converts with to_py()."""

    def to_py(self) -> dict[str, Any]:
        return dict(self)


class FakeJsHeaders:
    """A JS Headers object: iterates as [name, value] pairs, names lower-cased."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._pairs = [(name.lower(), value) for name, value in headers.items()]

    def __iter__(self) -> Any:
        return iter(self._pairs)


class FakeWebSocket:
    def __init__(self, fail_send: bool = False) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.fail_send = fail_send

    def send(self, text: str) -> None:
        if self.fail_send or self.closed:
            raise RuntimeError("WebSocket is closed")
        self.sent.append(text)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if code in (1005, 1006):
            raise ValueError("reserved close code")  # what the runtime does
        self.closed = (code, reason)

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.sent]


class FakeWebSocketPair:
    @staticmethod
    def new() -> Any:
        client, server = FakeWebSocket(), FakeWebSocket()
        return types.SimpleNamespace(object_values=lambda: (client, server))


class FakeHeaders(dict):
    """``new Headers(pairs)``: the Worker's responses build them from [name, value] pairs."""

    @classmethod
    def new(cls, pairs: Any = ()) -> FakeHeaders:
        return cls(pairs)


class FakeJsResponse:
    """``new Response(text, init)`` as the Cache API tier builds it."""

    def __init__(self, body: str, init: dict[str, Any]) -> None:
        self.body = body
        self.init = init

    @classmethod
    def new(cls, body: str, init: dict[str, Any]) -> FakeJsResponse:
        return cls(body, init)

    async def text(self) -> str:
        return self.body


class FakeCache:
    """``caches.default``: match / put / delete by URL (what the warm tier calls)."""

    def __init__(self) -> None:
        self.entries: dict[str, FakeJsResponse] = {}
        self.puts: list[tuple[str, dict[str, str]]] = []

    async def match(self, url: str) -> FakeJsResponse | None:
        return self.entries.get(url)

    async def put(self, url: str, response: FakeJsResponse) -> None:
        self.entries[url] = response
        self.puts.append((url, dict(response.init["headers"])))

    async def delete(self, url: str) -> bool:
        return self.entries.pop(url, None) is not None


def _fake_stringify(value: Any) -> str:
    """JSON.stringify of JS values: the fakes' JS objects are the ones with to_py()."""
    return json.dumps(value, default=lambda js_value: js_value.to_py())


def _install_runtime_stubs() -> None:
    js = types.ModuleType("js")
    js.Headers = FakeHeaders  # type: ignore[attr-defined]
    js.Response = FakeJsResponse  # type: ignore[attr-defined]
    js.caches = types.SimpleNamespace(default=FakeCache())  # type: ignore[attr-defined]
    js.TransformStream = FakeTransformStream  # type: ignore[attr-defined]
    js.WebSocketPair = FakeWebSocketPair  # type: ignore[attr-defined]
    js.AbortController = types.SimpleNamespace(new=lambda: FakeAbortController())  # type: ignore[attr-defined]
    js.Object = types.SimpleNamespace(fromEntries=FakeJsObject)  # type: ignore[attr-defined]
    js.JSON = types.SimpleNamespace(stringify=_fake_stringify)  # type: ignore[attr-defined]
    js.console = types.SimpleNamespace(log=print, debug=print, info=print, warn=print, error=print)  # type: ignore[attr-defined]
    flags = types.ModuleType("_cloudflare_compat_flags")
    helper = types.ModuleType("_pyodide_entrypoint_helper")
    helper.patchWaitUntil = lambda ctx: None  # type: ignore[attr-defined]
    for module in (js, flags, helper):
        sys.modules.setdefault(module.__name__, module)
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))  # the Worker's import root: `import entry`, `import durable_objects`


_install_runtime_stubs()

import workers  # noqa: E402  (needs the stubs above)

from flaregate.hosts.edge import rpc as edge_rpc  # noqa: E402
from flaregate.hosts.edge import worker as edge_worker  # noqa: E402


# -- workers.Response / workers.fetch --------------------------------------------------------
class FakeResponse:
    """workers.Response's constructor signature, keeping what it was given."""

    def __init__(self, body: Any = None, status: int | None = None, status_text: str = "",
                 headers: dict[str, str] | None = None, web_socket: Any = None) -> None:
        self.body = body
        self.status = status or 200
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.web_socket = web_socket

    def json(self) -> Any:
        return json.loads(self.body)


class FakeChunk:
    """A JS Uint8Array proxy as a ReadableStream yields it."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def to_bytes(self) -> bytes:
        return self._data

    @property
    def byteLength(self) -> int:  # noqa: N802 (the JS name)
        return len(self._data)


class FakeAbortController:
    """js.AbortController: aborting rejects the fetch and the body reads it guards."""

    def __init__(self) -> None:
        self.signal = types.SimpleNamespace(aborted=False, event=asyncio.Event())

    @classmethod
    def new(cls) -> FakeAbortController:
        return cls()

    def abort(self) -> None:
        self.signal.aborted = True
        self.signal.event.set()


async def until_aborted(signal: Any, work: Any) -> Any:
    """Run ``work`` unless ``signal`` aborts first (then raise as the runtime does)."""
    task = asyncio.ensure_future(work)
    if signal is None:
        return await task
    aborted = asyncio.ensure_future(signal.event.wait())
    done, _ = await asyncio.wait({task, aborted}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        aborted.cancel()
        return task.result()
    task.cancel()
    raise OSError("AbortError: The operation was aborted.")


class FakeBodyStream:
    """A JS ReadableStream proxy: read through a reader (which locks it), cancellable,
    may fail mid-way; the fetch's abort signal errors a pending read."""

    def __init__(self, chunks: Iterable[bytes], fail_after: int | None = None, delay: float = 0) -> None:
        self._chunks = list(chunks)
        self._fail_after = fail_after
        self._delay = delay
        self.cancelled = False
        self.locked = False
        self.signal: Any = None
        self.chunks_read = 0

    def getReader(self) -> FakeReader:  # noqa: N802 (the JS name)
        if self.locked:
            raise TypeError("ReadableStream is currently locked to a reader")
        self.locked = True
        return FakeReader(self)

    async def cancel(self) -> None:
        if self.locked:
            raise TypeError("This ReadableStream is currently locked to a reader.")
        self.cancelled = True


class FakeReader:
    def __init__(self, stream: FakeBodyStream) -> None:
        self._stream = stream
        self._index = 0

    async def read(self) -> Any:
        return await until_aborted(self._stream.signal, self._next())

    async def _next(self) -> Any:
        stream = self._stream
        if self._index >= len(stream._chunks):
            return types.SimpleNamespace(done=True, value=None)
        if stream._fail_after is not None and self._index >= stream._fail_after:
            raise RuntimeError("Network connection lost.")
        if stream._delay:
            await asyncio.sleep(stream._delay)
        chunk = stream._chunks[self._index]
        self._index += 1
        stream.chunks_read += 1
        return types.SimpleNamespace(done=False, value=FakeChunk(chunk))

    async def cancel(self) -> None:
        self._stream.cancelled = True


class FakeFetchResponse:
    def __init__(self, status: int, headers: dict[str, str], body: FakeBodyStream | None) -> None:
        self.status = status
        self.headers = http.client.HTTPMessage()
        for name, value in headers.items():
            self.headers[name] = value
        self.js_object = types.SimpleNamespace(headers=FakeJsHeaders(headers))
        self.body = body


class FakeFetch:
    """Stands in for workers.fetch: records calls, answers with queued responses."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.responses: list[Any] = []

    async def __call__(self, url: str, **options: Any) -> FakeFetchResponse:
        self.calls.append({"url": url, **options})
        answer = self.responses.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        signal = options.get("signal")
        if callable(answer):
            answer = await until_aborted(signal, answer())
        if isinstance(getattr(answer, "body", None), FakeBodyStream):
            answer.body.signal = signal  # aborting the fetch errors its body too
        return answer


# -- incoming requests ------------------------------------------------------------------------
class FakeRequest:
    """The parts of workers.Request the Worker reads."""

    def __init__(self, method: str, url: str, headers: dict[str, str] | None = None,
                 body: bytes = b"", chunked: bool = False) -> None:
        self.method = method
        self.url = url
        headers = dict(headers or {})
        if body and not chunked and not any(name.lower() == "content-length" for name in headers):
            headers["content-length"] = str(len(body))  # as an HTTP client frames it
        self.headers = http.client.HTTPMessage()
        for name, value in (headers or {}).items():
            self.headers[name] = value
        # Its body as a stream too, in 64 KiB chunks (a refused one is drained through it).
        stream = FakeBodyStream(body[i:i + 65536] for i in range(0, len(body), 65536)) if body else None
        self.js_object = types.SimpleNamespace(headers=FakeJsHeaders(headers or {}), body=stream)
        self._body = body
        self.body_reads = 0

    async def bytes(self) -> bytes:
        self.body_reads += 1
        if self.body_reads > 1:
            raise OSError("Body already used")
        return self._body


class FakeForwardedRequest(FakeRequest):
    """workers.Request(input, headers=...): a copy of ``input`` with its headers replaced."""

    def __init__(self, input: FakeRequest, headers: dict[str, str] | None = None) -> None:
        super().__init__(input.method, input.url, headers if headers is not None else dict(input.headers.items()),
                         input._body)


# -- bindings -----------------------------------------------------------------------------
class FakeKV:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.puts: list[dict[str, Any]] = []
        self.gets: list[str] = []  # every key read through the binding

    async def get(self, key: str) -> str | None:
        self.gets.append(key)
        return self.data.get(key)

    async def put(self, key: str, value: str, **options: Any) -> None:
        self.puts.append({"key": key, "value": value, **options})
        self.data[key] = value

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


class FakeJsRow:
    """A row as a raw JsProxy: not a dict, converts with to_py()."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def to_py(self) -> dict[str, Any]:
        return dict(self._data)


class FakeCursor:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows

    def toArray(self) -> list[FakeJsRow]:
        return [FakeJsRow(row) for row in self._rows]


class FakeSql:
    """ctx.storage.sql over a real SQLite engine."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.statements = 0

    def exec(self, query: str, *params: Any) -> FakeCursor:
        self.statements += 1
        return FakeCursor([dict(row) for row in self.db.execute(query, params)])


class FakeStorage:
    def __init__(self) -> None:
        self.sql = FakeSql()
        self.alarm: int | None = None
        self.alarm_sets: list[int] = []
        self.transactions = 0

    def transactionSync(self, work: Any) -> Any:
        """All of ``work``'s writes or none, as the runtime's ``transactionSync``."""
        self.transactions += 1
        self.sql.db.execute("BEGIN")
        try:
            result = work()
        except BaseException:
            self.sql.db.execute("ROLLBACK")
            raise
        self.sql.db.execute("COMMIT")
        return result

    async def getAlarm(self) -> int | None:
        return self.alarm

    async def setAlarm(self, when: int) -> None:
        self.alarm = when
        self.alarm_sets.append(when)


class FakeCtx:
    """ExecutionContext and DurableObjectState in one: waitUntil, storage, WebSockets."""

    live: list[FakeCtx] = []  # drained after each test, as the runtime would

    def __init__(self, storage: FakeStorage | None = None) -> None:
        FakeCtx.live.append(self)
        self.storage = storage or FakeStorage()
        self.waiting: list[Any] = []
        self.accepted: list[tuple[FakeWebSocket, list[str]]] = []

    def waitUntil(self, job: Any) -> None:
        assert inspect.isawaitable(job), "waitUntil needs an awaitable"
        self.waiting.append(job)

    async def drain(self) -> None:
        """Run background work the way the runtime would, including work it schedules."""
        while self.waiting:
            jobs, self.waiting = self.waiting, []
            for job in jobs:
                await job

    def acceptWebSocket(self, ws: FakeWebSocket, tags: list[str]) -> None:
        self.accepted.append((ws, list(tags)))

    def getWebSockets(self, tag: str | None = None) -> list[FakeWebSocket]:
        return [ws for ws, tags in self.accepted if ws.closed is None and (tag is None or tag in tags)]


def rpc_copy(value: Any) -> Any:
    """RPC serialises: nothing is shared between caller and callee."""
    return json.loads(json.dumps(value))


class DirectRpc:
    """A Durable Object instance called as the Worker calls it (hosts/edge/rpc.py): each RPC
    method gets its arguments as one JSON string and answers JSON, decoded here; the other
    attributes (fetch, alarm, webSocketMessage, ctx) pass through."""

    def __init__(self, instance: Any) -> None:
        self.instance = instance

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.instance, name)
        if not getattr(target, "json_rpc", False):
            return target

        def call(*args: Any) -> Any:
            result = target(edge_rpc.encode(list(args)))
            if not inspect.isawaitable(result):
                return edge_rpc.decode(result)

            async def finish() -> Any:
                return edge_rpc.decode(await result)

            return finish()

        return call


class FakeStub:
    def __init__(self, namespace: FakeDONamespace, name: str) -> None:
        self._namespace = namespace
        self._name = name

    async def fetch(self, request: Any) -> Any:
        return await self._namespace.instance(self._name).fetch(request)

    def __getattr__(self, method: str) -> Any:
        async def call(*args: Any) -> Any:
            target = getattr(self._namespace.instance(self._name), method)
            result = target(*rpc_copy(list(args)))
            if inspect.isawaitable(result):
                result = await result
            return rpc_copy(result)

        return call


class FakeDONamespace:
    """getByName(name) -> a stub over one in-process instance of the real DO class per name."""

    def __init__(self, cls: type, env: Any = None) -> None:
        self.cls = cls
        self.env = env
        self.names: list[str] = []
        self.ctxs: dict[str, FakeCtx] = {}
        self.instances: dict[str, Any] = {}

    def getByName(self, name: str) -> FakeStub:
        self.names.append(name)
        return FakeStub(self, name)

    def instance(self, name: str) -> Any:
        if name not in self.instances:
            ctx = self.ctxs.setdefault(name, FakeCtx())
            self.instances[name] = self.cls(ctx, self.env)
        return self.instances[name]

    def evict(self, name: str) -> None:
        """Hibernation: drop the instance, keep its storage and sockets."""
        self.instances.pop(name, None)


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def fake_http(monkeypatch: pytest.MonkeyPatch) -> FakeFetch:
    fetch = FakeFetch()
    monkeypatch.setattr(workers, "Response", FakeResponse)
    monkeypatch.setattr(workers, "fetch", fetch)
    monkeypatch.setattr(workers, "Request", FakeForwardedRequest)
    monkeypatch.setattr(edge_worker, "_cached", None)  # a fresh per-isolate Gateway per test
    monkeypatch.setattr(sys.modules["js"], "caches", types.SimpleNamespace(default=FakeCache()))  # this data centre's
    logger = logging.getLogger("flaregate")
    monkeypatch.setattr(logger, "level", logger.level)  # the Worker sets it from LOG_LEVEL
    root = logging.getLogger()  # configure_logging (Worker and hub) installs a JSON handler there
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    FakeTransformStream.created.clear()
    return fetch


@pytest.fixture(autouse=True)
async def drain_background_work():
    """Background work the runtime would still run after a response (no leaked coroutines)."""
    FakeCtx.live.clear()
    yield
    for ctx in FakeCtx.live:
        await ctx.drain()


API_KEY = "fg-test-key"
ADMIN_KEY = "fga-edge-admin-key-0123456789"


@pytest.fixture
def make_env():
    """An env like the Worker's: vars as str attributes plus the three bindings."""
    from durable_objects.metrics_hub import MetricsHub
    from durable_objects.rate_limiter import RateLimiter
    from durable_objects.security_store import SecurityStore

    def make(**vars: str) -> types.SimpleNamespace:
        env = types.SimpleNamespace(CACHE=FakeKV(), **{"FLAREGATE_API_KEYS": API_KEY, "FLAREGATE_ADMIN_KEY": ADMIN_KEY,
                                                       **vars})
        env.RATE_LIMITER = FakeDONamespace(RateLimiter, env)
        env.METRICS_HUB = FakeDONamespace(MetricsHub, env)
        env.SECURITY_STORE = FakeDONamespace(SecurityStore, env)
        return env

    return make
