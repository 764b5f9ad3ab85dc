"""The Files and Batches APIs' settings (``FILES_*``, ``BATCH_*``); see docs/batches.md."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from .._variables import set_fields

BATCH_VARS = {
    "FILES_MAX_BYTES": "file_max_bytes",
    "FILES_QUOTA_BYTES": "quota_bytes",
    "FILES_MAX_PER_KEY": "max_files",
    "BATCH_MAX_LINES": "max_lines",
    "BATCH_LINE_MAX_BYTES": "line_max_bytes",
    "BATCH_CONCURRENCY": "concurrency",
    "BATCH_MAX_SHARE": "max_share",
    "BATCH_LEASE_SECONDS": "lease_seconds",
    "BATCH_MAX_RETRIES": "max_rate_limit_waits",
    "BATCH_SLICE_LINES": "slice_lines",
    "FLAREGATE_FILES_DIR": "files_dir",  # the local host's; replicas point it at one shared directory
}


class BatchSettings(BaseModel):
    """Sizes, quotas and how hard a batch may push its key (docs/batches.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1)  # one upload (413 beyond)
    quota_bytes: int = Field(default=1024 * 1024 * 1024, ge=0)  # all of one key's files
    max_files: int = Field(default=1000, ge=1)  # files one key may hold at once
    max_lines: int = Field(default=50_000, ge=1)  # OpenAI's limit per batch
    line_max_bytes: int = Field(default=1_000_000, ge=64)  # one JSONL line (its request body)
    # Lines of one batch in flight at once (on the edge at most 6 calls wait for headers in
    # one invocation, so they are fanned out over lanes of 5: hosts/edge/batch_object.py).
    concurrency: int = Field(default=4, ge=1, le=64)
    # The fraction of the key's request limit a batch may use: it pauses while fewer than
    # (1 - max_share) of the key's requests remain, leaving those to interactive traffic.
    max_share: float = Field(default=0.5, gt=0.0, le=1.0)
    lease_seconds: float = Field(default=30.0, ge=1.0)  # a runner that died lets go after this
    max_rate_limit_waits: int = Field(default=1000, ge=0)  # 429 waits per line before it fails
    slice_lines: int = Field(default=64, ge=1, le=1000)  # lines per edge alarm run
    files_dir: str | None = None  # local host: where files and the job store live (default: DATA_DIR/files)


def batches_from_vars(vars: Mapping[str, str]) -> dict[str, str]:
    """The raw strings of the variables that are set, by field (pydantic parses them)."""
    return set_fields(vars, BATCH_VARS)
