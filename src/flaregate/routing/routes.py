"""Routes: a model alias maps to provider targets and a strategy that orders them."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import WILDCARD_ROUTE, RouteTarget, Settings
from ..errors import not_found
from ..providers import Provider


@dataclass(frozen=True, slots=True)
class Target:
    provider: Provider
    model: str
    weight: float = 1.0
    price_in: float | None = None  # USD per million input tokens
    price_out: float | None = None  # USD per million output tokens


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
            Target(provider, t.model or model, t.weight, t.input_price_per_1m, t.output_price_per_1m) for provider, t in targets
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
