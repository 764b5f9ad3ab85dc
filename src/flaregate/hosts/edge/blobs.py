"""The blob store of the Worker: an R2 bucket (the ``FILES`` binding; ``wrangler dev``
simulates it under its state directory). An upload of unknown length is written as it
arrives: the first ``PART_BYTES`` are held, and a file that ends within them is one ``put``;
a longer one becomes an R2 multipart upload of ``PART_BYTES`` parts (R2 wants every part but
the last at least 5 MiB, all the same size), so no more than one part is ever in memory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import js
from pyodide.ffi import to_js

from . import rpc
from .ports import current

log = logging.getLogger("flaregate.edge")

PART_BYTES = 5 * 1024 * 1024
PREFIX = "files/"


def _bucket(binding: str) -> Any:
    return getattr(rpc.raw_env(current().env), binding)


class R2BlobStore:
    def __init__(self, binding: str = "FILES") -> None:
        self._binding = binding

    async def put(self, name: str, chunks: AsyncIterator[bytes]) -> int:
        bucket = _bucket(self._binding)
        key = PREFIX + name
        part = bytearray()
        size = 0
        upload: Any = None
        parts: list[Any] = []
        try:
            async for chunk in chunks:
                part += chunk
                size += len(chunk)
                while len(part) >= PART_BYTES:
                    if upload is None:
                        upload = await bucket.createMultipartUpload(key)
                    piece = bytes(part[:PART_BYTES])
                    del part[:PART_BYTES]
                    parts.append(await upload.uploadPart(len(parts) + 1, to_js(piece)))
            if upload is None:
                await bucket.put(key, to_js(bytes(part)))
                return size
            if part:
                parts.append(await upload.uploadPart(len(parts) + 1, to_js(bytes(part))))
            await upload.complete(to_js(parts))
            return size
        except BaseException:
            if upload is not None:
                try:
                    await upload.abort()
                except Exception:
                    log.debug("aborting an R2 multipart upload failed", exc_info=True)
            raise

    async def open(self, name: str) -> AsyncIterator[bytes] | None:
        found = await _bucket(self._binding).get(PREFIX + name)
        if rpc.is_null(found) or found.body is None:
            return None
        return _chunks(found.body)

    async def delete(self, name: str) -> None:
        await _bucket(self._binding).delete(PREFIX + name)


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    reader = body.getReader()
    try:
        while True:
            result = await reader.read()
            if result.done:
                return
            yield bytes(result.value.to_bytes())
    finally:
        try:
            reader.releaseLock()
        except Exception:
            js.console.debug("releasing an R2 body reader failed")
