"""The compact request-log record: one request event as fixed columns, the rest only when present.

The event a request leaves is a JSON object of some 25 fields; stored whole as JSON text it
took ~1 100 bytes a record (column copies for the filters included). Here every common field
has a column of its own, in the cheapest form SQLite has for it:

* names (model, provider, key, path, cache tier, error class ...) are *labels*: a small
  integer into ``log_label`` (one row per distinct text), so ``"key_0e6e5cfde8662c3e"``
  costs 1-2 bytes a record instead of 20;
* milliseconds are whole microseconds (an integer of 2-3 bytes, not an 8-byte REAL);
* flags are 0/1 (SQLite stores both constants in the row header: zero bytes);
* the phase timings and the upstream attempts are short texts of label ids;
* a field that was present but null is one bit of ``nulls``.

A value a column cannot hold exactly (a float where an integer is expected, an unknown
field, a nested object) goes to ``extra``, compact JSON, and wins over the columns when
the record is read back: what ``/v1/logs`` returns is the event as it was written (key
order aside). Bodies (``LOG_BODIES``) have their own column, read only for one record.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..observability.request_bodies import BODY_FIELDS

# (field, kind): the fields of (nearly) every request, one column each. The order is the
# bit order of ``nulls``: often-null fields first. (Every column costs a byte of each row's
# header even when NULL, so rarer fields are in :data:`RARE` instead.)
FIELDS: tuple[tuple[str, str], ...] = (
    ("model", "label"), ("provider", "label"), ("cache", "label"), ("error_class", "label"),
    ("key_id", "label"), ("trace_id", "hex"), ("span_id", "hex"), ("error_code", "label"),
    ("cost_usd", "real"), ("upstream_model", "label"), ("path", "label"), ("status", "int"),
    ("upstream_status", "int"), ("stream", "bool"), ("cache_tier", "label"), ("attempts", "int"),
    ("failovers", "int"), ("tokens_in", "int"), ("tokens_out", "int"), ("latency_ms", "ms"),
    ("upstream_ms", "ms"), ("overhead_ms", "ms"), ("ttft_ms", "ms"), ("ratelimit_limit", "real"),
    ("ratelimit_remaining", "real"), ("kv_write_avoided", "bool"), ("phases", "phases"),
    ("upstream_attempts", "attempts"), ("error", "text"),
)
# Fields seldom set (or seldom anything but null): no column; a null one is a bit of
# ``nulls`` (after the columns' bits), any other value goes to ``extra``.
RARE = ("parent_span_id", "route", "route_branch", "shed", "cache_collapsed", "rate_limited", "bytes_saved",
        "tokens_saved", "response_bytes", "stream_outcome", "upstream_failures", "tags", "guardrails")
COLUMNS = tuple(name for name, _ in FIELDS)
_SQL_TYPE = {"text": "TEXT", "hex": "TEXT", "label": "", "int": "INTEGER", "bool": "INTEGER", "ms": "INTEGER",
             "real": "REAL", "phases": "TEXT", "attempts": "TEXT"}
COLUMN_DEFS = ", ".join(f"{name} {_SQL_TYPE[kind]}".rstrip() for name, kind in FIELDS)
# Not stored: the level is the store's own (a column), ts and request_id have their own.
_OWN = frozenset({"ts", "request_id", "level", *BODY_FIELDS})
_SAFE_INT = 2**53  # a Durable Object's sql.exec takes no JS BigInt
MAX_LABEL_CHARS = 200  # longer texts are stored as they are, not as labels

Labels = Callable[[str], int | None]  # text -> label id (None: keep the text itself)


_HEX = re.compile(r"(?:[0-9a-f]{2})+")


def pack_hex(text: str) -> str:
    """Lower-case hex (trace and span ids) as base64url, 2/3 of its length; any other text
    as itself behind ``!``, a character base64url never uses."""
    if _HEX.fullmatch(text):
        return base64.urlsafe_b64encode(bytes.fromhex(text)).decode().rstrip("=")
    return "!" + text


def unpack_hex(stored: str) -> str:
    if stored.startswith("!"):
        return stored[1:]
    try:
        return base64.urlsafe_b64decode(stored + "=" * (-len(stored) % 4)).hex()
    except (binascii.Error, ValueError):
        return stored


class _Miss(Exception):
    """This value has no exact column form: it goes to ``extra``."""


def _micros(value: Any) -> int:
    if type(value) is not float or not math.isfinite(value) or abs(value) >= _SAFE_INT / 1000:
        raise _Miss
    micros = round(value * 1000)
    if abs(micros) >= _SAFE_INT or micros / 1000 != value:
        raise _Miss
    return micros


def _encode(kind: str, value: Any, label: Labels) -> Any:
    if kind == "text":
        if type(value) is not str:
            raise _Miss
        return value
    if kind == "hex":
        if type(value) is not str:
            raise _Miss
        return pack_hex(value)
    if kind == "label":
        if type(value) is not str:
            raise _Miss
        found = label(value) if len(value) <= MAX_LABEL_CHARS else None
        return value if found is None else found
    if kind == "int":
        if type(value) is not int or abs(value) >= _SAFE_INT:
            raise _Miss
        return value
    if kind == "bool":
        if type(value) is not bool:
            raise _Miss
        return int(value)
    if kind == "ms":
        return _micros(value)
    if kind == "real":
        if type(value) is not float or not math.isfinite(value):
            raise _Miss
        return value
    if kind == "phases":
        if type(value) is not dict:
            raise _Miss
        names = list(value)  # one label for the names, in their order: the same set each request
        if not all(type(name) is str and "," not in name for name in names):
            raise _Miss
        found = label(",".join(names)) if len(",".join(names)) <= MAX_LABEL_CHARS else None
        if found is None:
            raise _Miss
        return ",".join([str(found), *(str(_micros(ms)) for ms in value.values())])
    if kind == "attempts":
        if type(value) is not list:
            raise _Miss
        parts = []
        for attempt in value:
            if type(attempt) is not list or len(attempt) != 2 or type(attempt[0]) is not str \
                    or type(attempt[1]) is not bool:
                raise _Miss
            found = label(attempt[0]) if len(attempt[0]) <= MAX_LABEL_CHARS else None
            if found is None:
                raise _Miss
            parts.append(f"{found}{'+' if attempt[1] else '-'}")
        return ",".join(parts)
    raise _Miss


def encode(event: Mapping[str, Any], label: Labels) -> tuple[list[Any], int, str | None]:
    """(column values in :data:`COLUMNS` order, the ``nulls`` bits, ``extra`` JSON or None)."""
    values: list[Any] = []
    nulls = 0
    extra: dict[str, Any] = {}
    for bit, (name, kind) in enumerate(FIELDS):
        if name not in event:
            values.append(None)
            continue
        value = event[name]
        if value is None:
            nulls |= 1 << bit
            values.append(None)
            continue
        try:
            values.append(_encode(kind, value, label))
        except _Miss:
            values.append(None)
            extra[name] = value
    for bit, name in enumerate(RARE, start=len(FIELDS)):
        if name in event and event[name] is None:
            nulls |= 1 << bit
    for name, value in event.items():
        if name not in _OWN and name not in extra and not _is_field(name) and value is not None:
            extra[name] = value
        elif value is None and name not in _OWN and name not in _NULL_BITS:
            extra[name] = None
    text = json.dumps(extra, default=str, separators=(",", ":")) if extra else None
    return values, nulls, text


_FIELD_NAMES = frozenset(COLUMNS)
_NULL_BITS = frozenset((*COLUMNS, *RARE))


def _is_field(name: str) -> bool:
    return name in _FIELD_NAMES


def label_ids(rows: Sequence[Mapping[str, Any]]) -> set[int]:
    """Every label id the rows refer to (columns, phase names, attempt providers)."""
    ids: set[int] = set()
    for row in rows:
        for name, kind in FIELDS:
            value = row.get(name)
            if value is None:
                continue
            if kind == "label" and type(value) is int:
                ids.add(value)
            elif kind == "phases" and value:
                ids.add(int(value.split(",", 1)[0]))
            elif kind == "attempts" and value:
                ids.update(int(part[:-1]) for part in value.split(","))
    return ids


def decode(row: Mapping[str, Any], labels: Mapping[int, str]) -> dict[str, Any]:
    """The event as it was written (its own ``ts`` and ``request_id`` included)."""
    record: dict[str, Any] = {"ts": row["ts"], "request_id": row["request_id"]}
    nulls = int(row.get("nulls") or 0)
    for bit, (name, kind) in enumerate(FIELDS):
        value = row.get(name)
        if value is None:
            if nulls >> bit & 1:
                record[name] = None
            continue
        if kind == "label":
            record[name] = labels.get(value, "?") if type(value) is int else value
        elif kind == "hex":
            record[name] = unpack_hex(value)
        elif kind == "bool":
            record[name] = bool(value)
        elif kind == "ms":
            record[name] = int(value) / 1000
        elif kind == "real":
            record[name] = float(value)
        elif kind == "phases":
            names_id, *micros = value.split(",")
            names = labels.get(int(names_id), "")
            record[name] = dict(zip(names.split(",") if names else [], (int(m) / 1000 for m in micros), strict=False))
        elif kind == "attempts":
            record[name] = [[labels.get(int(part[:-1]), "?"), part[-1] == "+"]
                            for part in (value.split(",") if value else ())]
        else:
            record[name] = value
    for bit, name in enumerate(RARE, start=len(FIELDS)):
        if nulls >> bit & 1:
            record[name] = None
    extra = row.get("extra")
    if extra:
        with_extra = json.loads(extra)
        if isinstance(with_extra, dict):
            record.update(with_extra)
    return record


def row_bytes(values: list[Any], extra: str | None, request_id: str) -> int:
    """What a row costs on disk, estimated: the values as SQLite stores them, the row's
    header and cell, and its three index entries (ts, request id, class + ts), with the
    pages' free space (calibrated on ``bench.log_bytes``: within a few per cent)."""
    size = 102 + 2 * len(request_id) + (len(extra) if extra else 0)
    for value in values:
        if value is None or value in (0, 1):
            continue
        if isinstance(value, str):
            size += len(value) + 1
        elif isinstance(value, float):
            size += 8
        else:
            size += 2 if -32768 <= value < 32768 else 4 if -(2**31) <= value < 2**31 else 8
    return size
