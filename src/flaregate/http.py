"""The core's own request and response types: what a host turns its HTTP objects into."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

Body = bytes | AsyncIterator[bytes]


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only header mapping (names are stored lower-cased)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        merged: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            # Repeated headers join with a comma, as RFC 9110 allows for list-valued fields.
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        self._items = merged

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:
        return self._items.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    query: Mapping[str, str] = field(default_factory=dict)
    client_ip: str | None = None
    # The route template's parameters (``/admin/keys/{key_id}`` -> ``{"key_id": ...}``), set
    # by the gateway from :meth:`flaregate.routes.RouteTable.match`; empty on exact paths.
    params: Mapping[str, str] = field(default_factory=dict)
    # The query string as the host received it (without ``?``; ``query`` is its parsed form):
    # request signatures cover it (security/signing.py).
    raw_query: str = ""
    # A body the host did not read (the routes ``Gateway.streams_body`` names, e.g. a file
    # upload): its chunks as they arrive, under no cap but the route's own; ``body`` is empty.
    stream: AsyncIterator[bytes] | None = None


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Body = b""

    @property
    def is_stream(self) -> bool:
        return not isinstance(self.body, bytes | bytearray)


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    merged = {"content-type": "application/json"}
    if headers:
        merged.update(headers)
    return Response(status, merged, json.dumps(data, separators=(",", ":")).encode())
