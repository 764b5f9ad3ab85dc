"""The shapes the job store keeps and hands back: a file's catalogue row, a batch (OpenAI's
Batch object plus the store's own ``_`` fields), a line's checkpoint row. They cross a
Durable Object's RPC as JSON on the edge, so each is a TypedDict: plain dicts at run time,
checked shapes in the code that reads them."""

from __future__ import annotations

from typing import NotRequired, TypedDict


class LineError(TypedDict):
    """One entry of a batch's ``errors`` list, as OpenAI reports a bad input line."""

    code: str
    message: str
    param: str | None
    line: int | None


class BatchErrors(TypedDict):
    object: str  # "list"
    data: list[LineError]


class RequestCounts(TypedDict):
    total: int
    completed: int
    failed: int


class BatchRecord(TypedDict):
    id: str
    object: str  # "batch"
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None
    _owner: NotRequired[str]  # the key that owns it (the runner's own reads)
    _ending: NotRequired[str]  # how a batch that stopped early ends ("expired")


class BatchChanges(TypedDict, total=False):
    """What a runner or a cancel merges into a batch (``batches.update``)."""

    status: str
    errors: BatchErrors
    output_file_id: str | None
    error_file_id: str | None
    in_progress_at: int
    finalizing_at: int
    completed_at: int
    failed_at: int
    expired_at: int
    cancelling_at: int
    cancelled_at: int
    _ending: str


class ActiveBatch(TypedDict):
    id: str
    owner: str


class FileRecord(TypedDict):
    """A file's catalogue row (``batch_files``)."""

    id: str
    owner: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None
    status: str


class FileObject(TypedDict):
    """OpenAI's File object, as the Files API answers."""

    id: str
    object: str  # "file"
    bytes: int
    created_at: int
    expires_at: int | None
    filename: str
    purpose: str
    status: str
    status_details: None


class UploadRoom(TypedDict):
    """``files.begin``'s answer: whether the upload may start, and what the owner holds."""

    ok: bool
    count: int
    used: int


class PendingLine(TypedDict):
    line: int
    custom_id: str
    body: str  # the request's body, JSON


class LineResult(TypedDict):
    line: int
    custom_id: str
    result: str  # {"status_code", "request_id", "body"} or {"error"}, JSON


# -- the job store's operations: each one's arguments (``JobStore.call(op, args)``; JSON over
# a Durable Object's RPC on the edge, so these are what the store reads, by op) ---------------

class FilesBegin(TypedDict):
    owner: str
    id: str
    filename: str
    purpose: str
    created_at: int
    expires_at: int | None
    now: int
    max_files: int


class FileCommit(TypedDict):
    id: str
    bytes: int
    # With a quota: refused when the owner's other stored files and this one exceed it.
    owner: NotRequired[str]
    now: NotRequired[int]
    quota: NotRequired[int]


class CommitAnswer(TypedDict):
    ok: bool
    used: NotRequired[int]  # when refused: what the owner's other files hold


class FileId(TypedDict):  # files.abort
    id: str


class FilesPut(TypedDict):
    owner: str
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None


class OwnedFile(TypedDict):  # files.get (with now), files.delete
    owner: str
    id: str
    now: NotRequired[int]


class FilesList(TypedDict):
    owner: str
    now: int
    limit: int
    purpose: NotRequired[str | None]
    after: NotRequired[str | None]
    order: NotRequired[str]


class FilesExpired(TypedDict):
    now: int
    limit: NotRequired[int]


class BatchCreate(TypedDict):
    owner: str
    batch: BatchRecord


class BatchRef(TypedDict):  # batches.get (owner None: the runner's own read), batches.status
    id: str
    owner: NotRequired[str | None]


class BatchesList(TypedDict):
    owner: str
    limit: int
    after: NotRequired[str | None]


# "from": only when the batch's status is one of these (a cancel that lost the race to
# completion leaves the batch as it is). A keyword, hence the functional form.
BatchUpdate = TypedDict("BatchUpdate", {"id": str, "changes": BatchChanges, "from": NotRequired[list[str] | None]})


class BatchCancel(TypedDict):
    id: str
    owner: str
    now: int


class NoArgs(TypedDict):  # batches.active
    pass


class LinesAdd(TypedDict):
    batch_id: str
    rows: list[list[int | str]]  # [line, custom_id, body JSON]


class LinesOf(TypedDict):  # lines.clear
    batch_id: str


class LinesPage(TypedDict):  # lines.pending (state: lines.results)
    batch_id: str
    limit: int
    after: NotRequired[int]
    state: NotRequired[str]


class LineRecord(TypedDict):
    batch_id: str
    line: int
    state: str  # "ok" / "failed"
    result: str


class LinesFail(TypedDict):  # lines.fail_pending
    batch_id: str
    result: str


class LeaseClaim(TypedDict):
    id: str
    holder: str
    now: float
    until: float


class LeaseRelease(TypedDict):
    id: str
    holder: str
