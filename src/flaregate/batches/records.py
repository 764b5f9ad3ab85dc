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
