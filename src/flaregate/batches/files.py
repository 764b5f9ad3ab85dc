"""``/v1/files``: OpenAI's Files API, per gateway key. An upload is a multipart form read as
it arrives (``multipart.read_streamed_form``) and written to the blob store as it is read,
never held whole; its bytes count against ``FILES_MAX_BYTES`` (413 ``file_too_large``)
and the key's ``FILES_QUOTA_BYTES`` (413 ``storage_quota_exceeded``) as they arrive. A key
sees only its own files: another key's file is a 404, as one that does not exist."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping

from ..errors import GatewayError, bad_request, not_found
from ..http import Request, Response, json_response
from ..multipart import invalid, read_streamed_form
from ..ports import BlobStore, Clock, JobStoreClient
from ..routes import Handler
from ..security.access import AccessControl
from .records import FileObject, FileRecord, UploadRoom
from .settings import BatchSettings

PURPOSES = ("batch", "batch_output", "assistants", "fine-tune", "vision", "user_data", "evals")
UPLOADABLE = frozenset({"batch", "assistants", "fine-tune", "vision", "user_data", "evals"})
MIN_EXPIRY_SECONDS, MAX_EXPIRY_SECONDS = 3600, 30 * 86400
BATCH_FILE_DEFAULT_EXPIRY = 30 * 86400  # OpenAI keeps batch files 30 days by default
MAX_LIST_LIMIT = 10_000
_FIELDS_SLACK = 65536  # what a form's fields and framing may add to a file's declared length


def file_object(row: FileRecord) -> FileObject:
    return {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"],
            "expires_at": row["expires_at"], "filename": row["filename"], "purpose": row["purpose"],
            "status": "processed", "status_details": None}


def _over_quota(room: int) -> GatewayError:
    return GatewayError(413, "The upload would take this key over its storage quota "
                        f"({room} bytes left; FILES_QUOTA_BYTES); delete files first.",
                        code="storage_quota_exceeded", headers={"connection": "close"})


def no_such_file(file_id: str, param: str = "file_id") -> GatewayError:
    return not_found(f"No such File object: {file_id[:128]}", code="file_not_found", param=param)


# A refused upload whose declared size is at most this is read to its end before the 413 is
# sent: a client still sending when the answer comes would otherwise see the connection
# reset (workerd closes it with the body unread) instead of the error. Larger ones are
# answered at once: reading them would cost more than a client that cannot read early answers.
_DRAIN_MAX_BYTES = 16 << 20


async def _drain(chunks: AsyncIterator[bytes], declared: int) -> None:
    if declared > _DRAIN_MAX_BYTES:
        return
    read = 0
    try:
        async for chunk in chunks:
            read += len(chunk)
            if read > _DRAIN_MAX_BYTES:
                return
    except Exception:  # the client gave up, or the body was already read: answer anyway
        return


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


class Files:
    """The Files API's handlers and the catalogue reads the batches share."""

    def __init__(self, settings: BatchSettings, access: AccessControl, jobs: JobStoreClient, blobs: BlobStore,
                 clock: Clock) -> None:
        self.settings = settings
        self.access = access
        self.jobs = jobs
        self.blobs = blobs
        self.clock = clock

    def handlers(self) -> dict[str, Handler]:
        """The handler of each of the Files routes (``paths.ROUTES``), by name."""
        return {"files.upload": self._upload, "files.list": self._list, "files.retrieve": self._retrieve,
                "files.delete": self._delete, "files.content": self._content}

    def _now(self) -> int:
        return int(self.clock.now())

    async def find(self, owner: str, file_id: str) -> FileRecord | None:
        row: FileRecord | None = await self.jobs.call(owner, "files.get", {"owner": owner, "id": file_id,
                                                                               "now": self._now()})
        return row

    async def sweep(self, owner: str) -> int:
        """Forget expired files (up to 100 at a time) and delete their bytes: run before each
        upload (the quota must not count them) and, locally, now and then."""
        expired = await self.jobs.call(owner, "files.expired", {"now": self._now(), "limit": 100})
        for file_id in expired:
            await self.blobs.delete(file_id)
        return len(expired)

    # -- upload ------------------------------------------------------------------------------
    async def _upload(self, request: Request, out: dict[str, str]) -> Response:
        owner = (await self.access.authenticate(request)).key_id
        limit = self.settings.file_max_bytes
        declared = request.headers.get("content-length") or ""
        chunks = request.stream if request.stream is not None else _once(request.body)
        if declared.isdigit() and int(declared) > limit + _FIELDS_SLACK:
            await _drain(chunks, int(declared))
            raise _too_large(limit)
        form = await read_streamed_form(chunks, request.headers.get("content-type") or "")
        if form.file_field != "file":
            raise invalid(f"The file part is named {form.file_field[:64]!r}: name it 'file'.", param="file")
        purpose = form.fields.get("purpose")
        if not isinstance(purpose, str) or purpose not in UPLOADABLE:
            raise bad_request(f"'purpose' must be one of {', '.join(sorted(UPLOADABLE))}.", param="purpose",
                              code="invalid_purpose")
        now = self._now()
        await self.sweep(owner)
        expires_at = self._expiry(form.fields, purpose, now)
        file_id = "file-" + secrets.token_hex(12)
        filename = form.filename[:256] or "upload"
        begun: UploadRoom = await self.jobs.call(owner, "files.begin", {
            "owner": owner, "id": file_id, "filename": filename, "purpose": purpose, "created_at": now,
            "expires_at": expires_at, "now": now, "max_files": self.settings.max_files})
        if not begun["ok"]:
            raise GatewayError(413, f"This key holds {begun['count']} files, the most allowed "
                               f"(FILES_MAX_PER_KEY={self.settings.max_files}); delete some first.",
                               code="too_many_files")
        room = max(0, self.settings.quota_bytes - int(begun["used"]))
        try:
            size = await self.blobs.put(file_id, self._counted(form.file_chunks(), limit, room))
        except BaseException as exc:
            await self.jobs.call(owner, "files.abort", {"id": file_id})
            await self.blobs.delete(file_id)
            if isinstance(exc, GatewayError) and exc.status == 413 and declared.isdigit():
                await _drain(chunks, int(declared))
            raise
        committed = await self.jobs.call(owner, "files.commit", {"id": file_id, "bytes": size, "owner": owner,
                                                                 "now": now, "quota": self.settings.quota_bytes})
        if not committed["ok"]:  # another upload of this key was stored while this one streamed
            await self.jobs.call(owner, "files.abort", {"id": file_id})
            await self.blobs.delete(file_id)
            raise _over_quota(max(0, self.settings.quota_bytes - int(committed["used"])))
        return json_response(file_object({"id": file_id, "owner": owner, "bytes": size, "created_at": now,
                                          "expires_at": expires_at, "filename": filename, "purpose": purpose,
                                          "status": "processed"}))

    def _expiry(self, fields: Mapping[str, str | list[str]], purpose: str, now: int) -> int | None:
        anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
        if anchor is None and seconds is None:
            return now + BATCH_FILE_DEFAULT_EXPIRY if purpose == "batch" else None
        if anchor != "created_at":
            raise bad_request("'expires_after[anchor]' must be 'created_at'.", param="expires_after.anchor",
                              code="invalid_expires_after")
        if not isinstance(seconds, str) or not seconds.isdigit() or \
                not MIN_EXPIRY_SECONDS <= int(seconds) <= MAX_EXPIRY_SECONDS:
            raise bad_request(f"'expires_after[seconds]' must be an integer from {MIN_EXPIRY_SECONDS} to "
                              f"{MAX_EXPIRY_SECONDS}.", param="expires_after.seconds", code="invalid_expires_after")
        return now + int(seconds)

    @staticmethod
    async def _counted(chunks: AsyncIterator[bytes], limit: int, room: int) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in chunks:
            seen += len(chunk)
            if seen > limit:
                raise _too_large(limit)
            if seen > room:
                raise _over_quota(room)
            yield chunk

    # -- reads -------------------------------------------------------------------------------
    async def _list(self, request: Request, out: dict[str, str]) -> Response:
        owner = (await self.access.authenticate(request)).key_id
        query = request.query
        limit = _limit(query.get("limit"), MAX_LIST_LIMIT, MAX_LIST_LIMIT)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise bad_request("'order' must be 'asc' or 'desc'.", param="order")
        purpose = query.get("purpose")
        if purpose is not None and purpose not in PURPOSES:
            raise bad_request(f"'purpose' must be one of {', '.join(PURPOSES)}.", param="purpose")
        rows: list[FileRecord] = await self.jobs.call(owner, "files.list", {"owner": owner, "purpose": purpose,
                                                           "after": query.get("after"), "limit": limit + 1,
                                                           "order": order, "now": self._now()})
        data = [file_object(r) for r in rows[:limit]]
        return json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None, "has_more": len(rows) > limit})

    async def _owned(self, request: Request) -> tuple[str, FileRecord]:
        owner = (await self.access.authenticate(request)).key_id
        file_id = request.params["file_id"]
        row = await self.find(owner, file_id)
        if row is None:
            raise no_such_file(file_id)
        return owner, row

    async def _retrieve(self, request: Request, out: dict[str, str]) -> Response:
        return json_response(file_object((await self._owned(request))[1]))

    async def _content(self, request: Request, out: dict[str, str]) -> Response:
        _, row = await self._owned(request)
        chunks = await self.blobs.open(row["id"])
        if chunks is None:
            raise no_such_file(row["id"])
        return Response(200, {"content-type": "application/octet-stream", "content-length": str(row["bytes"]),
                              "content-disposition": f'attachment; filename="{_header_safe(row["filename"])}"'},
                        chunks)

    async def _delete(self, request: Request, out: dict[str, str]) -> Response:
        owner, row = await self._owned(request)
        if await self.jobs.call(owner, "files.delete", {"owner": owner, "id": row["id"]}):
            await self.blobs.delete(row["id"])
        return json_response({"id": row["id"], "object": "file", "deleted": True})


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"The file exceeds {limit} bytes (FILES_MAX_BYTES).", code="file_too_large",
                        headers={"connection": "close"})


def _limit(raw: str | None, default: int, most: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise bad_request(f"'limit' must be an integer from 1 to {most}.", param="limit")
    return int(raw)


def _header_safe(name: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)[:128]
