"""The semantic index: one design on every host. Per partition, each entry's sign code (an
int), its quantised vector and its prompt's guard features. A search takes the Hamming
distance of the query's code to every code of the partition (from their byte columns, see
:class:`Partition`), keeps the ``limit`` nearest within the radius, and computes the exact
cosine of those only: one lookup reads at most a shortlist of vectors.

:class:`SqlSemanticIndex` keeps it in a SQL store (the local SQLite file; a Durable Object's
SQLite on the edge, one object per partition) with the partition's codes mirrored in memory,
so a search reads no row but its shortlist's. Its operations are JSON in and out (``call``),
the shape the edge's RPC and the Redis variant (hosts/local/semantic_redis.py) share.
"""

from __future__ import annotations

import heapq
import json
import math
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from itertools import compress
from typing import Any

from ...ports import Clock, SqlStorage
from .vectors import components, cosine_quantised, norm

_MAX_PARTITIONS_IN_MEMORY = 256
_COMPACT_AFTER = 256  # adds before the codes are made anew in a row (or an eighth of the partition)
_CODE_BITS = 256  # codes up to this wide are scanned by their byte columns (the embedded model's 256 dimensions)
_CODE_BYTES = _CODE_BITS // 8


@dataclass(frozen=True, slots=True)
class Match:
    entry_id: str
    similarity: float
    features: dict[str, Any]


def radius(threshold: float, bits: int) -> int:
    """The Hamming distance past which no vector can be near enough: the expected distance
    at the threshold's angle (bits x angle / pi), with a margin of a quarter more and 8 bits
    (on the labelled set the pairs at or above 0.7, 0.8, 0.9 stay within 1.06x, 1.08x and
    1.19x of it: 69, 56 and 44 bits of 256, against radii of 89, 73 and 56)."""
    angle = math.acos(max(-1.0, min(1.0, threshold)))
    return int(bits * angle / math.pi * 1.25) + 8


def shortlist(part: Partition, code: int, limit: int, now: float, within: int) -> list[str]:
    """The ids of the ``limit`` live entries whose codes are nearest ``code`` and within
    ``within`` bits of it: every distance from the partition's byte columns (C loops), then
    only those within the radius (the usual miss: none) ranked by it."""
    if part.wide or code.bit_length() > _CODE_BITS or within == 255:  # 255: a byte cannot tell it from 256
        near = _near_by_ints(part.codes, code, within)
        if len(near) > limit:
            near = heapq.nsmallest(limit, near, key=lambda i: (part.codes[i] ^ code).bit_count())
    else:
        distances = part.distances(code)
        near = _within(distances, within) if within < 255 else list(range(len(distances)))
        if len(near) > max(limit, len(distances) // 8):  # most of the partition is near: by distance, in C
            near = _nearest(distances, within, limit)
        elif len(near) > limit:
            near = heapq.nsmallest(limit, near, key=distances.__getitem__)
    return [part.ids[i] for i in near if part.expires[i] > now]  # an expired one is dropped, not replaced


def _near_by_ints(codes: list[int], code: int, within: int) -> list[int]:
    """The indexes within ``within`` bits, one XOR and ``bit_count`` an int (codes wider than
    the columns hold)."""
    return list(compress(range(len(codes)), map(within.__ge__, map(int.bit_count, map(code.__xor__, codes)))))


def _within(distances: bytes, within: int) -> list[int]:
    """The indexes whose distance byte is at most ``within``: one translate to flags, then
    the regular expression engine's scan for them (a C loop, where ``find`` a hit is not)."""
    flags = distances.translate(_at_most(within))
    if not flags.count(1):  # the usual miss
        return []
    return [m.start() for m in _byte(1).finditer(flags)]


def _nearest(distances: bytes, within: int, limit: int) -> list[int]:
    """The ``limit`` indexes of the smallest distances (ties: the older first), a distance
    at a time from 0: a C count a distance, a C scan for each one taken. A partition whose
    codes all lie near the query (a sparse model's, whose zeros all read as one sign) would
    otherwise rank every entry in Python."""
    picked: list[int] = []
    for distance in range(min(within, 255) + 1):
        if distances.count(distance):
            picked.extend(m.start() for m in _byte(distance).finditer(distances))
            if len(picked) >= limit:
                return picked[:limit]
    return picked


@cache
def _byte(value: int) -> re.Pattern[bytes]:
    """A pattern that finds one byte value (a flag, a distance)."""
    return re.compile(re.escape(bytes((value,))))


@cache
def _xor_popcount(byte: int) -> bytes:
    """The translate table of ``popcount(v ^ byte)`` for every byte v (made when first used:
    256 of them would cost the Worker's start some milliseconds)."""
    return bytes((v ^ byte).bit_count() for v in range(256))


@cache
def _at_most(within: int) -> bytes:
    return bytes(1 if v <= within else 0 for v in range(256))


def rank(ids: list[str], rows: Callable[[list[str]], dict[str, tuple[bytes, str]]], vector: bytes,
         threshold: float) -> list[dict[str, Any]]:
    """The shortlist's exact cosines at or above ``threshold``, best first, as the index
    answers them (with each one's guard features)."""
    query = components(vector)
    query_norm = norm(query)  # once, not once a candidate
    found = rows(ids)
    matches = []
    for entry_id in ids:
        row = found.get(entry_id)
        if row is None:
            continue
        similarity = cosine_quantised(query, components(row[0]), query_norm)
        if similarity < threshold:
            continue
        try:
            features = json.loads(row[1])
        except ValueError:
            continue
        matches.append({"id": entry_id, "similarity": round(similarity, 6), "features": features})
    matches.sort(key=lambda m: -m["similarity"])
    return matches


class Partition:
    """A partition's codes in memory, oldest first: parallel lists of ids, codes and expiry
    times, the set of its ids (a new id costs no search of the list), and the codes again as
    32 byte columns (column j: byte j of every code), which is what a scan reads.

    Why columns: XOR and ``bit_count`` over a list of ints cost four C calls an entry (some
    130 ns each at 100 000 entries). With columns, one ``bytes.translate`` a column maps each
    byte to its popcount against the query's byte, and ``int.from_bytes`` then adds the 32
    columns as one big int whose bytes are the distances: C loops over bytes, about 3x
    faster, and the same distances exactly."""

    __slots__ = ("_columns", "_members", "_scattered", "_wide", "codes", "expires", "ids")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.codes: list[int] = []
        self.expires: list[float] = []
        self._members: set[str] = set()
        self._columns = [bytearray() for _ in range(_CODE_BYTES)]
        self._scattered = 0
        self._wide = 0  # codes wider than the columns hold: while any is here, scans use the ints

    @property
    def wide(self) -> bool:
        return self._wide > 0

    def append(self, entry_id: str, code: int, expires_at: float) -> None:
        """Add an id not in the partition (``remove`` it first to replace it)."""
        self._members.add(entry_id)
        self.ids.append(entry_id)
        self.codes.append(code)
        self.expires.append(expires_at)
        if code.bit_length() > _CODE_BITS:
            self._wide += 1
            code = 0  # its columns are not read while it is here
        for column, byte in zip(self._columns, code.to_bytes(_CODE_BYTES, "little"), strict=True):
            column.append(byte)
        self._scattered += 1
        if self._scattered > max(_COMPACT_AFTER, len(self.codes) // 8):
            self.compact()

    def compact(self) -> None:
        """Make the codes anew, one after another. Ints made one at a time between other
        allocations (an add's, a loaded row's) lie scattered in memory, and a scan over
        them misses the CPU's cache at every step: about 3x slower at 50 000 entries than
        over ints made in a row. Amortised, a few microseconds an add (only a wide
        partition's scan reads the ints; a ranking of the shortlist reads a few)."""
        self.codes = [int.from_bytes(c.to_bytes((c.bit_length() + 7) // 8 or 1, "little"), "little")
                      for c in self.codes]
        self._scattered = 0

    def remove(self, entry_id: str) -> bool:
        if entry_id not in self._members:
            return False
        self._members.discard(entry_id)
        i = self.ids.index(entry_id)
        if self.codes[i].bit_length() > _CODE_BITS:
            self._wide -= 1
        del self.ids[i], self.codes[i], self.expires[i]
        for column in self._columns:
            del column[i]
        return True

    def distances(self, code: int) -> bytes:
        """Each entry's Hamming distance to ``code`` (at most 256 bits), one byte an entry.

        A byte holds 0-255: only a code that differs in all 256 bits (the query's exact
        complement) overflows, reading 0 and carrying into the next entry's byte. The first
        byte of any run of carries has none coming in, so reads 0: a 0 whose code is not
        the query's means a carry happened, and then (rarely) the ints give the distances."""
        count = len(self.ids)
        total = 0
        for column, byte in zip(self._columns, code.to_bytes(_CODE_BYTES, "little"), strict=True):
            total += int.from_bytes(column.translate(_xor_popcount(byte)), "little")
        distances = total.to_bytes(count + 1, "little")[:count]
        i = distances.find(0)
        while i != -1:
            if self.codes[i] != code:
                return bytes(min(255, (c ^ code).bit_count()) for c in self.codes)
            i = distances.find(0, i + 1)
        return distances


class SqlSemanticIndex:
    """The index over a SQL store (see the module's docstring). Synchronous: the local host
    and the Durable Object call it without an await between read and write."""

    def __init__(self, sql: SqlStorage, clock: Clock) -> None:
        self._sql = sql
        self._clock = clock
        self._partitions: OrderedDict[str, Partition] = OrderedDict()
        sql.exec("CREATE TABLE IF NOT EXISTS kv_semantic (partition TEXT NOT NULL, entry_id TEXT NOT NULL, "
                 "code TEXT NOT NULL, vector TEXT NOT NULL, features TEXT NOT NULL, expires_at REAL NOT NULL, "
                 "PRIMARY KEY (partition, entry_id))")

    def call(self, op: str, args: dict[str, Any]) -> Any:
        if op == "search":
            return self.search(str(args["partition"]), str(args["code"]), str(args["vector"]), int(args["limit"]),
                               float(args.get("threshold", 0.0)))
        if op == "add":
            self.add(str(args["partition"]), str(args["id"]), str(args["code"]), str(args["vector"]),
                     str(args["features"]), float(args["expires_at"]), int(args["max_entries"]))
            return {"ok": True}
        if op == "delete":
            self.delete(str(args["partition"]), str(args["id"]))
            return {"ok": True}
        raise ValueError(f"unknown semantic-index operation {op!r}")

    def _partition(self, name: str) -> Partition:
        part = self._partitions.get(name)
        if part is not None:
            self._partitions.move_to_end(name)
            return part
        part = Partition()
        for row in self._sql.exec("SELECT entry_id, code, expires_at FROM kv_semantic WHERE partition = ? "
                                  "ORDER BY rowid", name):
            part.append(row["entry_id"], int(row["code"], 16), float(row["expires_at"]))
        part.compact()
        self._partitions[name] = part
        while len(self._partitions) > _MAX_PARTITIONS_IN_MEMORY:
            self._partitions.popitem(last=False)
        return part

    def search(self, partition: str, code: str, vector: str, limit: int, threshold: float = 0.0) -> dict[str, Any]:
        part = self._partition(partition)
        raw = bytes.fromhex(vector)
        ids = shortlist(part, int(code, 16), limit, self._clock.now(), radius(threshold, len(raw)))
        return {"matches": rank(ids, lambda wanted: self._rows(partition, wanted), raw, threshold),
                "size": len(part.ids)}

    def _rows(self, partition: str, ids: list[str]) -> dict[str, tuple[bytes, str]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._sql.exec(f"SELECT entry_id, vector, features FROM kv_semantic WHERE partition = ? "
                              f"AND entry_id IN ({marks})", partition, *ids)
        return {r["entry_id"]: (bytes.fromhex(r["vector"]), r["features"]) for r in rows}

    def add(self, partition: str, entry_id: str, code: str, vector: str, features: str, expires_at: float,
            max_entries: int) -> None:
        part = self._partition(partition)
        now = self._clock.now()
        self._sql.exec("INSERT OR REPLACE INTO kv_semantic (partition, entry_id, code, vector, features, "
                       "expires_at) VALUES (?, ?, ?, ?, ?, ?)", partition, entry_id, code, vector, features, expires_at)
        part.remove(entry_id)
        part.append(entry_id, int(code, 16), expires_at)
        # Over the cap: the expired go first, then the oldest.
        if len(part.ids) > max_entries:
            if min(part.expires) <= now:  # a C loop; the Python one only when something expired
                for i in [i for i, e in zip(part.ids, part.expires, strict=True) if e <= now]:
                    self._forget(partition, part, i)
            while len(part.ids) > max_entries:
                self._forget(partition, part, part.ids[0])

    def _forget(self, partition: str, part: Partition, entry_id: str) -> None:
        part.remove(entry_id)
        self._sql.exec("DELETE FROM kv_semantic WHERE partition = ? AND entry_id = ?", partition, entry_id)

    def delete(self, partition: str, entry_id: str) -> None:
        self._forget(partition, self._partition(partition), entry_id)

    def sweep(self) -> int:
        """Delete expired entries everywhere (the local host's periodic compaction)."""
        now = self._clock.now()
        rows = self._sql.exec("DELETE FROM kv_semantic WHERE expires_at <= ? RETURNING partition, entry_id", now)
        for row in rows:
            part = self._partitions.get(row["partition"])
            if part is not None:
                part.remove(row["entry_id"])
        return len(rows)


class LocalSemanticIndex:
    """The SQL index in this process, behind the client shape."""

    def __init__(self, index: SqlSemanticIndex) -> None:
        self.index = index

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        return self.index.call(op, args)
