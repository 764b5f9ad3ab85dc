"""``POST /admin/cache/feedback``: a semantic hit reported wrong. ``{"request_id": "...",
"wrong": true}`` deletes the entry that answered that request (from the index and the exact
cache) and counts a false hit: in ``/admin/cache/stats``, and in the hub as the operational
event ``semantic_false_hit`` (``flaregate_operational_events_total{type="semantic_false_hit"}``)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from ...errors import GatewayError, bad_request, not_found
from ...http import Request, Response, json_response
from ...routes import Route
from ...security.admin import require_admin
from ..layer import CacheLayer
from .layer import FALSE_HIT_EVENT

log = logging.getLogger("flaregate.cache")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


class SemanticFeedback:
    def __init__(self, layer: CacheLayer, emit: Callable[[dict[str, Any]], None]) -> None:
        self._layer = layer
        self._emit = emit

    def routes(self) -> list[Route]:
        return [Route("/admin/cache/feedback", {"POST": self.feedback}, "admin",
                      "Report a semantic cache hit wrong: its entry is deleted, a false hit counted")]

    async def feedback(self, request: Request, out: dict[str, str]) -> Response:
        require_admin(request, self._layer.settings)
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise bad_request("We could not parse the JSON body of your request.", code="invalid_json") from None
        if not isinstance(body, dict) or set(body) - {"request_id", "wrong"}:
            raise bad_request('Send {"request_id": "<x-request-id of the answer>", "wrong": true}.',
                              code="invalid_feedback")
        request_id, wrong = body.get("request_id"), body.get("wrong", True)
        if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
            raise bad_request("'request_id' must be the x-request-id of a semantic hit.", param="request_id",
                              code="invalid_value")
        if wrong is not True:
            raise bad_request("'wrong' must be true (only wrong answers are reported).", param="wrong",
                              code="invalid_value")
        semantic = self._layer.semantic
        if semantic is None:
            raise not_found("No route has a semantic cache.", code="semantic_cache_off")
        try:
            result = await semantic.feedback(request_id, self._layer.cache)
        except Exception:
            log.warning("semantic feedback failed", exc_info=True)
            raise GatewayError(503, "The cache store is unreachable; nothing was deleted.", type="api_error",
                               code="cache_store_unavailable") from None
        if result is None:
            raise not_found(f"No semantic cache hit is known for request '{request_id}'.",
                            code="semantic_hit_not_found")
        self._emit({"type": FALSE_HIT_EVENT, "ts": self._layer.clock.now(), "entry": result["entry"],
                    "similarity": result["similarity"]})
        return json_response({"deleted": result})
