"""``GET /v1/logs`` (a filtered page, or ``?format=jsonl`` for a time range) and
``GET /v1/logs/{request_id}`` (one record with its events), over the hub's log store.
A page never carries bodies; one record does, for the admin key only (``bodies=False``: the
observer key's view, the bodies taken out and ``bodies_withheld`` set).

The query goes to the store as plain strings; the store validates it and answers a bad one
with ``{"error": ...}``, which becomes a 400 here (never a 5xx).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from ..errors import GatewayError
from ..http import Request, Response, json_response
from ..observability.request_bodies import BODY_FIELDS

Ask = Callable[[dict[str, str]], Awaitable[dict[str, Any]]]
EXPORT_MAX_ROWS = 10_000  # one export; page further with since/until
_PARAMS = ("since", "until", "level", "status", "model", "provider", "key_id", "cache", "error_class",
           "request_id", "trace_id", "q", "limit", "cursor")
_NO_STORE = {"cache-control": "no-store"}


def _params(request: Request) -> dict[str, str]:
    return {name: str(request.query[name])[:500] for name in _PARAMS if request.query.get(name)}


def _checked(answer: dict[str, Any]) -> dict[str, Any]:
    error = answer.get("error")
    if isinstance(error, dict):
        raise GatewayError(400, str(error.get("message", "Invalid query."))[:300], code="invalid_value",
                           param=str(error.get("param", "")) or None)
    return answer


async def logs(request: Request, ask: Ask) -> Response:
    params = _params(request)
    fmt = request.query.get("format") or "json"
    if fmt == "json":
        return json_response(_checked(await ask(params)), headers=dict(_NO_STORE))
    if fmt != "jsonl":
        raise GatewayError(400, "format must be json or jsonl.", code="invalid_value", param="format")
    lines: list[str] = []
    cursor = params.get("cursor")
    while len(lines) < EXPORT_MAX_ROWS:
        page = _checked(await ask({**params, "limit": "200", **({"cursor": cursor} if cursor else {})}))
        lines.extend(json.dumps(record, separators=(",", ":")) for record in page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    headers = {"content-type": "application/x-ndjson", **_NO_STORE}
    if cursor:
        headers["x-next-cursor"] = str(cursor)  # the export stopped at its cap: continue from here
    return Response(200, headers, "".join(line + "\n" for line in lines).encode())


async def one_log(request: Request, ask: Ask, bodies: bool = True) -> Response:
    request_id = unquote(request.path[len("/v1/logs/"):])
    if not request_id or len(request_id) > 100 or "/" in request_id:
        raise GatewayError(404, "No request log with that id.", code="log_not_found")
    record = _checked(await ask({"id": request_id})).get("record")
    if record is None:
        raise GatewayError(404, f"No request log with id {request_id[:100]!r}.", code="log_not_found")
    if not bodies and any(name in record for name in BODY_FIELDS):
        record = {k: v for k, v in record.items() if k not in BODY_FIELDS}
        record["bodies_withheld"] = True
    return json_response(record, headers=dict(_NO_STORE))
