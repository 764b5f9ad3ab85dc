"""The Realtime upgrade as an operation of the one pipeline: its "body" is the query
(``?model=``), its key may come in the browser subprotocol, its reservation is one request
unit (each response reserves its own tokens later). The pipeline runs auth, route, authorise,
prepare (a target that speaks Realtime), input guard and limits (``Pipeline.admit``); the
host then opens the provider's socket itself instead of the pipeline's upstream stage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..config import Settings
from ..http import Headers, Request
from ..pipeline.context import RequestContext
from ..pipeline.runner import with_bearer
from ..pipeline.spec import OperationSpec, StreamWatch
from ..security.access import presented_token
from .entry import PATH
from .metering import RESERVATION

KEY_PROTOCOL = "openai-insecure-api-key."  # a browser cannot set headers on a WebSocket


class RealtimeQuery(BaseModel):
    """``GET /v1/realtime?model=<alias>`` (other query parameters are the provider's)."""

    model_config = ConfigDict(extra="allow")

    model: str


def offered_protocols(headers: Headers) -> list[str]:
    raw = ",".join(v for k, v in headers.items() if k.lower() == "sec-websocket-protocol")
    return [p.strip() for p in raw.split(",") if p.strip()]


def presented_key(request: Request) -> str | None:
    """The key: ``Authorization: Bearer``, else the ``openai-insecure-api-key.<key>`` subprotocol."""
    token = presented_token(request)
    if token is None:
        token = next((p[len(KEY_PROTOCOL):] for p in offered_protocols(request.headers)
                      if p.startswith(KEY_PROTOCOL) and len(p) > len(KEY_PROTOCOL)), None)
    return token


def _credentials(request: Request) -> Request:
    token = presented_key(request)
    return request if token is None or presented_token(request) else with_bearer(request, token)


def _query(request: Request, settings: Settings) -> dict[str, Any]:
    return {"model": request.query.get("model") or None}


def _reservation(ctx: RequestContext) -> Mapping[str, Any]:
    return RESERVATION


def _relayed(ctx: RequestContext) -> StreamWatch:
    raise RuntimeError("a Realtime session is relayed by its host, never streamed by the pipeline")


def realtime_spec(prepare: Callable[[RequestContext], Awaitable[None]]) -> OperationSpec:
    return OperationSpec(
        name="realtime", path=PATH, body_model=RealtimeQuery, operation="realtime",
        summary="Realtime API session (WebSocket upgrade)", watch=_relayed, idempotent=False,
        credentials=_credentials, parse=_query, estimate=_reservation, prepare=prepare,
        notes={"cache": "a session is a conversation, never cached",
               "upstream": "the host opens the provider's socket and relays (realtime/relay.py)"})
