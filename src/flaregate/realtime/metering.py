"""What a Realtime session's responses cost: each ``response.create`` reserves under the
key's limits and budgets (``ratelimits.enforcer``, the same reserve/settle as every other
request), each ``response.done`` settles with its real usage and becomes an analytics event
(so the hub and ``/metrics`` see every response as it ends, not at the session's end)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..accounting import Usage
from ..errors import GatewayError
from ..guardrails.checks import Guardrails
from ..http import Request
from ..ratelimits.enforcer import Admission, Limits
from ..request_event import RequestEvent
from ..security.access import Principal
from .events import ResponseUsage

# A response's reservation: one request unit and a token or two (a response says nothing
# of its size beforehand); the real usage replaces it when the response is done.
RESERVATION = {"messages": None, "max_tokens": 1}


class SessionMeter:
    def __init__(self, limits: Limits, analytics: Any, request: Request, principal: Principal, routed: str,
                 event: RequestEvent, guardrails: Guardrails | None = None, policy: Any = None) -> None:
        self._limits = limits
        self._analytics = analytics
        self._request = request
        self._principal = principal
        self._routed = routed
        self._provider = ""  # the target that accepted the session (``connected``)
        self._upstream_model = ""
        self._event = event  # the session's event: each response's is a copy of its labels
        self._guardrails = guardrails
        self._policy = policy
        self.responses = 0

    def connected(self, provider: str, upstream_model: str) -> None:
        self._provider, self._upstream_model = provider, upstream_model

    async def reserve(self) -> Admission:
        return await self._limits.admit(self._request, self._principal, self._routed, RESERVATION, {}, {})

    async def settle(self, reservation: Any, usage: ResponseUsage, response_id: str | None,
                     latency_ms: float = 0.0) -> float:
        """Charge the response and record it: its latency is from its ``response.create``
        (or the previous response's end, for one the provider began) to its ``response.done``."""
        real = Usage(usage.input_tokens, usage.output_tokens)
        if reservation is None:  # a response the provider began itself (server VAD): charged now
            try:
                reservation = await self.reserve()
            except GatewayError:
                reservation = None  # spent already: recorded, and the next response.create is refused
        if isinstance(reservation, Admission):
            await reservation.settle(real, self._provider, self._upstream_model)
        cost = self._limits.prices.cost(self._routed, self._provider, self._upstream_model, real)
        self.responses += 1
        base = self._event
        event: RequestEvent = {
            "ts": base["ts"], "request_id": f"{base['request_id']}.r{self.responses}", "path": base["path"],
            "trace_id": base.get("trace_id"), "span_id": None, "parent_span_id": base.get("span_id"),
            "status": 200, "model": base.get("model"), "key_id": base.get("key_id"), "provider": self._provider,
            "upstream_model": self._upstream_model, "upstream_status": 101, "cache": None, "stream": True,
            "client": base.get("client"), "tokens_in": usage.input_tokens, "tokens_out": usage.output_tokens,
            "latency_ms": latency_ms, "upstream_ms": latency_ms, "stream_outcome": "complete",
            "realtime": {"kind": "response", "session": base["request_id"], "response_id": response_id,
                         "cached_tokens": usage.cached_tokens, "audio_tokens_in": usage.input_audio_tokens,
                         "audio_tokens_out": usage.output_audio_tokens},
        }
        if "route" in base:
            event["route"] = base["route"]
        self._analytics.record(event)
        return cost

    def guard(self, text: str) -> str | None:
        """``conversation.item.create`` texts and ``session.update`` instructions through the
        policy, as the pipeline's input guard does for a chat body (redacted, or a 400)."""
        if self._guardrails is None or self._policy is None:
            return None
        try:
            event = json.loads(text)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        kind = event.get("type")
        if kind == "conversation.item.create" and isinstance(event.get("item"), Mapping):
            item = dict(event["item"])
            body: dict[str, Any] = {"input": item.get("content")}
            self._guardrails.check_input(self._policy, body, self._event)
            item["content"] = body["input"]
            event["item"] = item
        elif kind == "session.update" and isinstance(event.get("session"), Mapping):
            session = dict(event["session"])
            if not isinstance(session.get("instructions"), str):
                return None
            body = {"instructions": session["instructions"]}
            self._guardrails.check_input(self._policy, body, self._event)
            session["instructions"] = body["instructions"]
            event["session"] = session
        else:
            return None
        return json.dumps(event, ensure_ascii=False)
