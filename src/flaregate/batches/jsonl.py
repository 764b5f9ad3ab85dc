"""A batch's input file, checked line by line as it is read (never held whole): each line a
JSON object ``{"custom_id", "method": "POST", "url": <the batch's endpoint>, "body": {...}}``
within ``BATCH_LINE_MAX_BYTES``, every ``custom_id`` once. What is wrong becomes an entry of
OpenAI's ``errors`` list (``code``, ``message``, ``param``, ``line``, 1-based) and the batch
fails validation, as OpenAI's does; the requests themselves are checked when they run (a bad
body is that line's 400 in the error file)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .records import LineError

MAX_ERRORS = 100  # errors reported (the first ones), as OpenAI caps its list
MAX_CUSTOM_ID_CHARS = 512


@dataclass(slots=True)
class Checked:
    rows: list[tuple[int, str, str]] = field(default_factory=list)  # (line, custom_id, body JSON)
    errors: list[LineError] = field(default_factory=list)
    lines: int = 0


def _error(code: str, message: str, line: int, param: str | None = None) -> LineError:
    return {"code": code, "message": message, "param": param, "line": line}


async def lines_of(chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[tuple[int, bytes | None]]:
    """(1-based line number, its bytes), or None for a line over ``max_bytes`` (skipped to its
    end, never held); blank lines are skipped."""
    pending = bytearray()
    number = 0
    oversize = False
    async for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not oversize:
                pending += piece
                if len(pending) > max_bytes:
                    oversize = True
                    pending.clear()
            if end < 0:
                break
            number += 1
            if oversize:
                yield number, None
            elif pending.strip():
                yield number, bytes(pending)
            pending.clear()
            oversize = False
            start = end + 1
    if oversize or pending.strip():
        number += 1
        yield number, None if oversize else bytes(pending)


def check_line(raw: bytes, number: int, endpoint: str, seen: set[str]) -> tuple[str, str] | LineError:
    """(custom_id, body JSON) of a good line, or the error that fails it."""
    try:
        item = json.loads(raw)
    except (ValueError, RecursionError):
        return _error("invalid_json_line", f"Line {number} is not valid JSON.", number)
    if not isinstance(item, dict):
        return _error("invalid_json_line", f"Line {number} is not a JSON object.", number)
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID_CHARS:
        return _error("missing_required_parameter", f"Line {number}: 'custom_id' must be a non-empty string of at "
                      f"most {MAX_CUSTOM_ID_CHARS} characters.", number, "custom_id")
    if custom_id in seen:
        return _error("duplicate_custom_id", f"Line {number}: the custom_id {custom_id[:64]!r} is used by an "
                      "earlier line; each line needs its own.", number, "custom_id")
    if item.get("method") != "POST":
        return _error("invalid_method", f"Line {number}: 'method' must be 'POST'.", number, "method")
    if item.get("url") != endpoint:
        return _error("invalid_url", f"Line {number}: 'url' must be the batch's endpoint {endpoint!r}.", number,
                      "url")
    body = item.get("body")
    if not isinstance(body, dict):
        return _error("invalid_request", f"Line {number}: 'body' must be a JSON object.", number, "body")
    extra = sorted(set(item) - {"custom_id", "method", "url", "body"})
    if extra:
        return _error("invalid_request", f"Line {number}: unknown field {extra[0][:64]!r}.", number, extra[0][:64])
    seen.add(custom_id)
    return custom_id, json.dumps(body, separators=(",", ":"))


async def check_file(chunks: AsyncIterator[bytes], endpoint: str, max_line_bytes: int, max_lines: int,
                     add: Any) -> Checked:
    """Check every line; good ones are handed to ``add(rows)`` in groups (to the store)."""
    checked = Checked()
    seen: set[str] = set()
    async for number, raw in lines_of(chunks, max_line_bytes):
        checked.lines += 1
        if checked.lines > max_lines:
            checked.errors.append(_error("too_many_lines", f"The file has more than {max_lines} requests "
                                         "(BATCH_MAX_LINES).", number))
            break
        found: tuple[str, str] | LineError
        if raw is None:
            found = _error("line_too_large", f"Line {number} is longer than {max_line_bytes} bytes "
                           "(BATCH_LINE_MAX_BYTES).", number)
        else:
            found = check_line(raw, number, endpoint, seen)
        if isinstance(found, dict):
            if len(checked.errors) < MAX_ERRORS:
                checked.errors.append(found)
            continue
        if checked.errors:
            continue  # the batch fails anyway: keep reading only to report errors
        checked.rows.append((number, found[0], found[1]))
        if len(checked.rows) >= 500:
            await add(checked.rows)
            checked.rows = []
    if checked.lines == 0:
        checked.errors.append(_error("empty_file", "The input file has no requests.", 0))
    return checked
