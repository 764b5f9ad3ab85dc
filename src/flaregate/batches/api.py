"""``/v1/batches``: OpenAI's Batch API, run by the gateway itself for any provider. A batch
belongs to the key that created it (another key gets a 404); its lines run as that key's
requests through the one pipeline (``runner.py``). The host drives the runner
(``Batches.wake``): the local server in background tasks over SQLite, the Worker in a
Durable Object's alarms."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from ..errors import GatewayError, bad_request, not_found
from ..http import Request, Response, json_response
from ..ports import BlobStore, Clock, JobStoreClient
from ..routes import Handler, Route
from ..schemas import validation_error
from ..security import limits
from ..security.access import AccessControl, forbidden
from . import paths
from .files import Files, no_such_file
from .records import BatchRecord
from .runner import BatchRunner, LineRunner
from .settings import BatchSettings

ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings")
COMPLETION_WINDOW_SECONDS = {"24h": 86400}
MAX_LIST_LIMIT = 100


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: StrictStr = Field(min_length=1, max_length=128)
    endpoint: StrictStr
    completion_window: StrictStr
    metadata: dict[StrictStr, StrictStr] | None = Field(default=None, max_length=16)


def public(batch: BatchRecord) -> dict[str, Any]:
    """The batch as OpenAI shows it (the store's own fields, named with ``_``, left out)."""
    return {k: v for k, v in batch.items() if not k.startswith("_")}


class Batches:
    """The Files and Batches APIs of one gateway: their routes, and the runner the host drives."""

    def __init__(self, settings: BatchSettings, access: AccessControl, jobs: JobStoreClient, blobs: BlobStore,
                 clock: Clock, run_line: LineRunner, max_json_depth: int) -> None:
        self.settings = settings
        self.access = access
        self.jobs = jobs
        self.clock = clock
        self.files = Files(settings, access, jobs, blobs, clock)
        self.runner = BatchRunner(settings, jobs, blobs, clock, run_line, access.principal_by_id)
        self._max_json_depth = max_json_depth
        # Set by the host: start (or resume) running a batch; (owner, batch id).
        self.wake: Callable[[str, str], None] = lambda owner, batch_id: None
        # The handler of each route in ``paths.ROUTES``, by name.
        self.handlers: dict[str, Handler] = {
            **self.files.handlers(), "batches.create": self._create, "batches.list": self._list,
            "batches.retrieve": self._retrieve, "batches.cancel": self._cancel}

    def routes(self) -> list[Route]:
        return paths.routes(self.handlers.__getitem__)

    async def _create(self, request: Request, out: dict[str, str]) -> Response:
        principal = await self.access.authenticate(request)
        owner = principal.key_id
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise bad_request("Content-Type must be application/json.", code="unsupported_media_type")
        raw = limits.parse_json(request.body, self._max_json_depth)
        try:
            body = CreateBatch.model_validate(raw)
        except ValidationError as exc:
            raise validation_error(exc) from None
        if body.endpoint not in ENDPOINTS:
            raise bad_request(f"'endpoint' must be one of {', '.join(ENDPOINTS)}.", param="endpoint",
                              code="invalid_endpoint")
        window = COMPLETION_WINDOW_SECONDS.get(body.completion_window)
        if window is None:
            raise bad_request("'completion_window' must be '24h'.", param="completion_window",
                              code="invalid_completion_window")
        for name, value in (body.metadata or {}).items():
            if len(name) > 64 or len(value) > 512:
                raise bad_request("'metadata' keys are at most 64 characters and values at most 512.",
                                  param="metadata")
        if not principal.allows_route(body.endpoint):
            raise forbidden(f"This API key may not use {body.endpoint}.", "route_not_allowed", "endpoint")
        source = await self.files.find(owner, body.input_file_id)
        if source is None:
            raise no_such_file(body.input_file_id, "input_file_id")
        if source["purpose"] != "batch":
            raise bad_request(f"The input file's purpose is {source['purpose']!r}: upload it with purpose 'batch'.",
                              param="input_file_id", code="invalid_input_file")
        now = int(self.clock.now())
        batch_id = "batch_" + secrets.token_hex(12)
        batch: BatchRecord = {"id": batch_id, "object": "batch", "endpoint": body.endpoint,
                 "errors": None, "input_file_id": body.input_file_id, "completion_window": body.completion_window,
                 "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
                 "in_progress_at": None, "expires_at": now + window, "finalizing_at": None, "completed_at": None,
                 "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.metadata}
        await self.jobs.call(owner, "batches.create", {"owner": owner, "batch": batch})
        self.wake(owner, batch_id)
        return json_response(batch)

    async def _found(self, request: Request) -> tuple[str, BatchRecord]:
        owner = (await self.access.authenticate(request)).key_id
        batch_id = request.params["batch_id"]
        batch = await self.jobs.call(owner, "batches.get", {"id": batch_id, "owner": owner})
        if batch is None:
            raise not_found(f"No such Batch object: {batch_id[:128]}", code="batch_not_found", param="batch_id")
        return owner, batch

    async def _retrieve(self, request: Request, out: dict[str, str]) -> Response:
        owner, batch = await self._found(request)
        if batch["status"] not in ("completed", "failed", "expired", "cancelled"):
            self.wake(owner, batch["id"])  # a poll re-arms the runner (an edge alarm may be lost)
        return json_response(public(batch))

    async def _list(self, request: Request, out: dict[str, str]) -> Response:
        owner = (await self.access.authenticate(request)).key_id
        raw = request.query.get("limit", "20")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST_LIMIT:
            raise bad_request(f"'limit' must be an integer from 1 to {MAX_LIST_LIMIT}.", param="limit")
        limit = int(raw)
        rows: list[BatchRecord] = await self.jobs.call(owner, "batches.list", {"owner": owner, "after": request.query.get("after"),
                                                             "limit": limit + 1})
        data = [public(b) for b in rows[:limit]]
        return json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None, "has_more": len(rows) > limit})

    async def _cancel(self, request: Request, out: dict[str, str]) -> Response:
        owner, batch = await self._found(request)
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            raise GatewayError(409, f"The batch is {batch['status']}: it cannot be cancelled.",
                               code="batch_not_cancellable")
        batch = await self.jobs.call(owner, "batches.cancel", {"id": batch["id"], "owner": owner,
                                                                "now": int(self.clock.now())})
        self.wake(owner, batch["id"])
        return json_response(public(batch))
