"""The blob store of the local host: one file per object in a directory (``FILES_DIR``,
by default ``DATA_DIR/files``), written to a temporary name and renamed into place, so a
reader never sees half a file and a crash leaves none. Replicas that share the directory
(one volume all of them mount) share the files."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from .files import FILE_MODE, private_dir

CHUNK_BYTES = 256 * 1024
_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")


class DirectoryBlobStore:
    def __init__(self, root: Path) -> None:
        self._root = private_dir(root / "blobs")

    def _path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ValueError(f"bad blob name {name[:40]!r}")
        return self._root / name

    async def put(self, name: str, chunks: AsyncIterator[bytes]) -> int:
        final = self._path(name)
        temporary = final.with_name(f".{name}.{secrets.token_hex(4)}.part")
        size = 0
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
        return size

    async def open(self, name: str) -> AsyncIterator[bytes] | None:
        try:
            handle = self._path(name).open("rb")
        except (FileNotFoundError, ValueError):
            return None
        return _read(handle)

    async def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            self._path(name).unlink()


async def _read(handle: object) -> AsyncIterator[bytes]:
    with handle:  # type: ignore[attr-defined]
        while True:
            chunk = handle.read(CHUNK_BYTES)  # type: ignore[attr-defined]
            if not chunk:
                return
            yield chunk
