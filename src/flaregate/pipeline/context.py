"""What the stages of one request share. The analytics event (``event``) holds analytics
fields only: nothing a stage passes to another travels in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..http import Request
from ..observability.profiler import Profiler
from ..request_event import RequestEvent

if TYPE_CHECKING:
    from ..cache.layer import CachePlan
    from ..overload.shedder import Permit
    from ..ratelimits.enforcer import Admission
    from ..routing.routes import RouteTargets
    from ..security.access import Principal
    from .spec import OperationSpec


@dataclass(slots=True)
class RequestContext:
    spec: OperationSpec
    request: Request
    out: dict[str, str]  # headers every answer of this request carries
    profiler: Profiler
    event: RequestEvent  # the analytics record, completed by the runner's finish
    acting: Principal | None = None  # set: on this key's behalf (cache warming), no key is checked
    body: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    principal: Principal | None = None
    route: str = ""  # the route the request resolved to (a conditional alias's choice)
    targets: RouteTargets | None = None
    guard: Any = None  # the guardrail policy its answer goes through (None: none)
    admission: Admission | None = None
    plan: CachePlan | None = None
    permit: Permit | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # stored earlier turns (Responses)
    upstream_started: float = 0.0
    response_body: bytearray | None = None  # the answer's bytes, collected for the request log (LOG_BODIES)

    @property
    def tenant(self) -> str:
        assert self.principal is not None
        return self.principal.key_id
