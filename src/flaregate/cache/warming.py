"""Cache warming: fill the cache ahead of demand through the normal request path.

``POST /admin/cache/warm`` takes ``{"key_id": "...", "requests": [<chat body>, ...]}`` (or
``"key": "<gateway key>"`` instead of ``key_id``; optional ``"headers"`` such as a cache
namespace or TTL, applied to every item), or a bare JSON list / JSONL body with
``?key_id=``. Each item runs as a chat completion of that key, so its rate limits, budgets,
model permissions, routing and failover apply, and a hit costs nothing. The job runs in the
background (``ctx.waitUntil`` on the edge), at most ``CACHE_WARM_CONCURRENCY`` items at a
time; its state is kept in the key-value store (KV on the edge, so any isolate can read it)
under ``fg:warm:<job>`` for a day. ``GET /admin/cache/warm/{job}`` shows it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from ..errors import GatewayError, bad_request
from ..http import Headers, Request, Response, json_response
from ..observability import tracing
from ..ports import Ports
from ..routes import Route
from ..security.access import AccessControl, Principal
from ..security.admin import require_admin

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("flaregate.cache")

PREFIX = "/admin/cache/warm"
JOB_KEY_PREFIX = "fg:warm:"
JOB_TTL_SECONDS = 86400
MAX_ITEMS = 1000
_SAVE_EVERY_SECONDS = 1.0  # KV takes one write per second per key


class WarmResult(TypedDict):
    """One item's outcome: its chat answer's status and cache header, or the error code."""

    index: int
    status: int | str  # "pending" until it has run
    cache: NotRequired[str | None]
    error: NotRequired[str | None]


class WarmJob(TypedDict):
    """A warming job as ``GET /admin/cache/warm/{id}`` shows it (kept in the cache store, JSON)."""

    id: str
    object: str  # "cache.warm_job"
    status: str
    key_id: str
    created_at: float
    finished_at: float | None
    total: int
    done: int
    filled: int
    already_cached: int
    failed: int
    results: list[WarmResult]
_FORWARDED = ("x-flaregate-cache-namespace", "x-flaregate-cache-ttl")

Chat = Callable[[Request, dict[str, str], Principal], Awaitable[Response]]


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return bad_request(message, param=param, code="invalid_warm_request")


def parse_job(body: bytes, query: dict[str, str]) -> tuple[dict[str, str], list[Any], dict[str, str]]:
    """(key reference, items, headers) from a JSON object, a JSON list or JSONL; 400 if bad."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise _invalid("The body must be UTF-8 JSON or JSONL.") from None
    try:
        parsed: Any = json.loads(text)
    except (ValueError, RecursionError):
        try:  # JSONL: one request per non-empty line
            parsed = [json.loads(line) for line in text.splitlines() if line.strip()]
        except (ValueError, RecursionError):
            raise _invalid("The body is neither JSON nor JSONL.") from None
    ref = {k: query[k] for k in ("key_id",) if query.get(k)}
    headers: dict[str, str] = {}
    if isinstance(parsed, dict):
        extra = set(parsed) - {"key_id", "key", "requests", "headers"}
        if extra:
            raise _invalid(f"Unknown fields {sorted(extra)}.")
        ref = {k: parsed[k] for k in ("key_id", "key") if k in parsed}
        raw_headers = parsed.get("headers", {})
        if not isinstance(raw_headers, dict) or not all(
                isinstance(k, str) and k.lower() in _FORWARDED and isinstance(v, str) for k, v in raw_headers.items()):
            raise _invalid(f"'headers' may only hold {', '.join(_FORWARDED)} (string values).", "headers")
        headers = {k.lower(): v for k, v in raw_headers.items()}
        parsed = parsed.get("requests")
    if len(ref) != 1 or not all(isinstance(v, str) and v for v in ref.values()):
        raise _invalid("Name the key to charge: exactly one of 'key_id' or 'key'.", "key_id")
    if not isinstance(parsed, list) or not parsed:
        raise _invalid("'requests' must be a non-empty list of chat completion requests.", "requests")
    if len(parsed) > MAX_ITEMS:
        raise _invalid(f"At most {MAX_ITEMS} requests per job.", "requests")
    if not all(isinstance(item, dict) for item in parsed):
        raise _invalid("Every request must be a JSON object (a chat completion body).", "requests")
    return ref, parsed, headers


class CacheWarming:
    def __init__(self, settings: Settings, ports: Ports, access: AccessControl, chat: Chat) -> None:
        self._settings = settings
        self._ports = ports
        self._access = access
        self._chat = chat

    def routes(self) -> list[Route]:
        return [Route(PREFIX, {"POST": self.start}, "admin", "Start a cache warming job (runs in the background)"),
                Route(PREFIX + "/{job_id}", {"GET": self.status}, "admin", "A cache warming job's progress")]

    def route(self, request: Request) -> Callable[[Request, dict[str, str]], Awaitable[Response]] | None:
        """Superseded by :meth:`routes` once the gateway dispatches through its route table."""
        if request.path == PREFIX:
            return self.start if request.method == "POST" else self._wrong_method
        if request.path.startswith(PREFIX + "/"):
            return self.status if request.method == "GET" else self._wrong_method
        return None

    async def _wrong_method(self, request: Request, out: dict[str, str]) -> Response:
        allowed = "POST" if request.path == PREFIX else "GET"
        raise GatewayError(405, f"Method {request.method[:16]} is not allowed on this path.",
                           code="method_not_allowed", headers={"allow": allowed})

    async def start(self, request: Request, out: dict[str, str]) -> Response:
        require_admin(request, self._settings)
        ref, items, headers = parse_job(request.body, dict(request.query))
        principal = await self._principal(ref)
        job_id = "warm_" + secrets.token_hex(8)
        job: WarmJob = {
            "id": job_id, "object": "cache.warm_job", "status": "running", "key_id": principal.key_id,
            "created_at": round(self._ports.clock.now(), 3), "finished_at": None, "total": len(items),
            "done": 0, "filled": 0, "already_cached": 0, "failed": 0,
            "results": [{"index": i, "status": "pending"} for i in range(len(items))],
        }
        await self._save(job)
        self._ports.tasks.run(self._run(job, items, headers, principal))
        return json_response({"id": job_id, "object": job["object"], "status": job["status"], "total": job["total"],
                              "url": f"{PREFIX}/{job_id}"}, status=202)

    async def status(self, request: Request, out: dict[str, str]) -> Response:
        require_admin(request, self._settings)
        job_id = request.params.get("job_id") or request.path[len(PREFIX) + 1:]
        raw = None
        if job_id.startswith("warm_") and len(job_id) <= 64 and job_id[5:].isalnum():
            raw = await self._ports.cache.get(JOB_KEY_PREFIX + job_id)
        if raw is None:
            raise GatewayError(404, "No such cache warming job (jobs are kept for a day).", code="unknown_warm_job")
        return json_response(json.loads(raw))

    async def _principal(self, ref: dict[str, str]) -> Principal:
        if "key" in ref:
            probe = Request("POST", "/v1/chat/completions", Headers([("authorization", f"Bearer {ref['key']}")]))
            try:
                return await self._access.authenticate(probe)
            except GatewayError:
                raise _invalid("'key' is not a usable gateway key.", "key") from None
        principal = await self._access.principal_by_id(ref["key_id"], "/v1/chat/completions")
        if principal is None:
            raise _invalid("'key_id' names no usable gateway key.", "key_id")
        return principal

    async def _run(self, job: WarmJob, items: list[Any], headers: dict[str, str], principal: Principal) -> None:
        gate = asyncio.Semaphore(self._settings.cache.warm_concurrency)
        saved_at = self._ports.clock.monotonic()

        async def one(index: int, item: dict[str, Any]) -> None:
            nonlocal saved_at
            async with gate:
                job["results"][index] = await self._warm_one(index, item, headers, principal)
            result = job["results"][index]
            job["done"] += 1
            if result["status"] != 200:
                job["failed"] += 1
            elif result["cache"] == "HIT":
                job["already_cached"] += 1
            else:
                job["filled"] += 1
            now = self._ports.clock.monotonic()
            if now - saved_at >= _SAVE_EVERY_SECONDS:
                saved_at = now
                await self._save(job)

        try:
            await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
            job["status"] = "completed"
        except Exception:
            log.exception("cache warming job %s failed", job["id"])
            job["status"] = "failed"
        job["finished_at"] = round(self._ports.clock.now(), 3)
        await self._save(job)

    async def _warm_one(self, index: int, item: dict[str, Any], headers: dict[str, str],
                        principal: Principal) -> WarmResult:
        """``item``: one chat request body as the admin sent it (JSON: the wire's)."""
        body = json.dumps({**item, "stream": False}).encode()
        request = Request("POST", "/v1/chat/completions",
                          Headers([("content-type", "application/json"), *headers.items()]), body)
        try:
            out = {"x-request-id": tracing.request_id(None), "traceparent": tracing.child_traceparent(None)}
            response = await self._chat(request, out, principal)
        except Exception:
            log.warning("cache warming item %d failed", index, exc_info=True)
            return {"index": index, "status": 500, "error": "internal_error"}
        result: WarmResult = {"index": index, "status": response.status,
                                  "cache": response.headers.get("x-flaregate-cache")}
        if response.status != 200 and isinstance(response.body, bytes):
            try:
                result["error"] = json.loads(response.body)["error"].get("code")
            except (ValueError, KeyError, TypeError, AttributeError):
                result["error"] = None
        return result

    async def _save(self, job: WarmJob) -> None:
        try:
            await self._ports.cache.put(JOB_KEY_PREFIX + job["id"], json.dumps(job), JOB_TTL_SECONDS)
        except Exception:
            log.warning("could not save cache warming job %s", job["id"], exc_info=True)
