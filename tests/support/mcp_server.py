"""A real MCP server for the tests: the official SDK's ``MCPServer`` over Streamable HTTP.

Run as ``python -m tests.support.mcp_server --port N --name NAME``. Its tools:
``add`` (two integers), ``echo`` (text back, and the headers the gateway sent, minus the
credential), ``count`` (progress notifications, then a result: a streamed answer),
``sleep`` (waits, for cancellation), ``ask`` (elicits a city from the client), ``announce``
(speaks on the session's standalone GET stream, not tied to a call); resources ``note://readme`` and ``weather://{city}``,
a prompt ``greet`` and completions of their arguments. With ``--token T`` every request must carry
``Authorization: Bearer T`` (the credential the gateway injects). ``--tools N`` adds
``tool_0``..``tool_N-1`` (the listing bench); ``--description`` changes ``add``'s
description (a server whose definition changed, for pinning). ``GET /stats`` counts the
MCP requests it was sent and the ``sleep`` calls cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel

SEEN: list[dict[str, str]] = []  # the headers of each request, credential removed
TASKS: list[Any] = []  # announce's background tasks (kept referenced)
COUNTS = {"requests": 0, "tools/list": 0, "cancelled": 0}  # GET /stats (the listing bench counts upstream calls)


def build(name: str, description: str, extra_tools: int) -> MCPServer:
    server = MCPServer(name)

    @server.tool(description=description)
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Echo a text back, with the request headers the server saw.")
    def echo(text: str) -> str:
        return json.dumps({"text": text, "headers": SEEN[-1] if SEEN else {}})

    @server.tool(description="Count to n, reporting progress at each step.")
    async def count(n: int, ctx: Context) -> str:
        try:
            for i in range(1, n + 1):
                await ctx.report_progress(i, n, f"step {i}")
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:  # as sleep's: GET /stats counts it
            COUNTS["cancelled"] += 1
            raise
        return f"counted to {n}"

    class City(BaseModel):
        city: str

    @server.tool(description="Ask the user for a city (an elicitation, server to client).")
    async def ask(ctx: Context) -> str:
        answer = await ctx.elicit("Which city?", City)
        return f"{answer.action}:{answer.data.city if answer.data is not None else ''}"

    @server.tool(description="Speak on the session's own stream a moment later: a notification, a roots "
                             "request, then a notification naming the first root the client gave.")
    async def announce(word: str, ctx: Context) -> str:
        from mcp import types

        session = ctx.session

        async def later() -> None:
            await asyncio.sleep(0.3)
            await session.send_notification(types.ResourceUpdatedNotification(
                params=types.ResourceUpdatedNotificationParams(uri=f"note://{word}")))
            roots = await session.list_roots()
            first = str(roots.roots[0].uri) if roots.roots else "none"
            await session.send_notification(types.ResourceUpdatedNotification(
                params=types.ResourceUpdatedNotificationParams(uri=f"roots://{first}")))

        TASKS.append(asyncio.ensure_future(later()))
        return "announcing"

    @server.tool(description="Sleep for some seconds.")
    async def sleep(seconds: float) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:  # the client's cancel reached this server (GET /stats counts it)
            COUNTS["cancelled"] += 1
            raise
        return "slept"

    @server.resource("note://readme", description="A short note.", mime_type="text/plain")
    def readme() -> str:
        return f"the readme of {name}"

    @server.resource("weather://{city}", description="The weather in a city.")
    def weather(city: str) -> str:
        return f"sunny in {city} ({name})"

    @server.prompt(description="Greet someone.")
    def greet(who: str) -> str:
        return f"Hello {who}, from {name}."

    @server.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> Any:
        from mcp_types import Completion

        options = ["paris", "oslo", "osaka"] if argument.name == "city" else ["ada", "alan"]
        return Completion(values=[o for o in options if o.startswith(argument.value)])

    for i in range(extra_tools):
        def make(i: int) -> Any:
            def tool(x: str = "") -> str:
                return f"tool {i}: {x}"
            return tool
        server.add_tool(make(i), name=f"tool_{i}", description=f"Generated tool number {i}.")
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="test")
    parser.add_argument("--token", default="")
    parser.add_argument("--description", default="Add two integers.")
    parser.add_argument("--tools", type=int, default=0)
    parser.add_argument("--json-response", action="store_true")
    args = parser.parse_args()
    server = build(args.name, args.description, args.tools)
    app = server.streamable_http_app(json_response=args.json_response, host="0.0.0.0")

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/stats":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(COUNTS).encode()})
            return
        if scope["type"] == "http":
            COUNTS["requests"] += 1
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            if args.token and headers.get("authorization") != f"Bearer {args.token}":
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": b'{"error":"bad credential"}'})
                return
            headers.pop("authorization", None)
            SEEN.append(headers)
            del SEEN[:-20]
        await app(scope, receive, send)

    uvicorn.run(guarded, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()


class McpServerProcess:
    """``python -m tests.support.mcp_server`` as a child process on a free port; ``restart``
    starts it again on the same port (its sessions gone, like a server that came back)."""

    def __init__(self, name: str, token: str = "", *extra: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.name = name
        self.token = token
        self.extra = extra
        self.process: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self, *extra: str) -> McpServerProcess:
        import subprocess
        import sys
        import time

        import httpx

        args = [sys.executable, "-m", "tests.support.mcp_server", "--port", str(self.port), "--name", self.name,
                *(("--token", self.token) if self.token else ()), *(extra or self.extra)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"MCP server {self.name} exited early")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"MCP server {self.name} did not start")

    def stop(self) -> None:
        from tests.support import processes

        if self.process is not None and self.process.poll() is None:
            processes.stop(self.process)
        self.process = None

    def restart(self, *extra: str) -> None:
        self.stop()
        self.start(*extra)

    def __enter__(self) -> McpServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
