"""Routes: a model alias maps to provider targets and a strategy that orders them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import not_found
from ..providers.base import Provider
from ..request_event import RequestEvent
from .conditions import choose
from .settings import WILDCARD_ROUTE, RouteTarget

if TYPE_CHECKING:
    from ..config import Settings


@dataclass(frozen=True, slots=True)
class Target:
    provider: Provider
    model: str
    weight: float = 1.0
    price_in: float | None = None  # USD per million input tokens
    price_out: float | None = None  # USD per million output tokens
    max_in_flight: int | None = None  # concurrent upstream calls allowed (None: no cap)


class RouteTargets(list):
    """The targets of one resolved route (a plain list), plus the route's strategy."""

    strategy: str = "fallback"
    alias: str = ""


class Router:
    def __init__(self, settings: Settings, providers: dict[str, Provider]) -> None:
        self.providers = providers
        self._routes = {
            alias: (route.strategy, tuple((providers[t.provider], t) for t in route.targets))
            for alias, route in settings.routes.items()
        }
        self._conditional = settings.conditional_routes

    def pick(self, model: str, headers: Mapping[str, str], body: Mapping[str, Any], tags: Mapping[str, str],
             event: RequestEvent) -> str:
        """The route a conditional alias chooses for this request (else ``model`` itself)."""
        route = self._conditional.get(model)
        if route is None:
            return model
        chosen, branch = choose(route, headers, body, tags)
        event["route_branch"] = "default" if branch is None else branch
        return chosen

    def resolve(self, model: str) -> RouteTargets:
        alias = model if model in self._routes else WILDCARD_ROUTE
        if alias not in self._routes:
            raise not_found(
                f"The model '{model}' does not exist or is not routed by this gateway.",
                code="model_not_found",
                param="model",
            )
        strategy, targets = self._routes[alias]
        resolved = RouteTargets(
            Target(provider, t.model or model, t.weight, t.input_price_per_1m, t.output_price_per_1m,
                   t.max_in_flight) for provider, t in targets
        )
        resolved.strategy, resolved.alias = strategy, alias
        return resolved

    def models(self) -> list[tuple[str, str]]:
        """(alias, first provider name) for every explicit route."""
        return [(alias, t[1][0][0].name) for alias, t in self._routes.items() if alias != WILDCARD_ROUTE]

    def routes(self) -> list[tuple[str, str, list[RouteTarget]]]:
        """(alias, strategy, configured targets) for every route."""
        return [(alias, strategy, [t for _, t in targets]) for alias, (strategy, targets) in self._routes.items()]


def route_signature(targets: list[Target]) -> str:
    return "|".join(f"{t.provider.name}:{t.model}" for t in targets)
