"""Routes: a model alias maps to an ordered list of provider targets."""

from __future__ import annotations

from dataclasses import dataclass

from .config import WILDCARD_ROUTE, Settings
from .errors import not_found
from .providers import Provider


@dataclass(frozen=True, slots=True)
class Target:
    provider: Provider
    model: str


class Router:
    def __init__(self, settings: Settings, providers: dict[str, Provider]) -> None:
        self._routes = {
            alias: tuple((providers[t.provider], t.model) for t in targets)
            for alias, targets in settings.routes.items()
        }

    def resolve(self, model: str) -> list[Target]:
        targets = self._routes.get(model) or self._routes.get(WILDCARD_ROUTE)
        if not targets:
            raise not_found(
                f"The model '{model}' does not exist or is not routed by this gateway.",
                code="model_not_found",
                param="model",
            )
        return [Target(provider, target_model or model) for provider, target_model in targets]

    def models(self) -> list[tuple[str, str]]:
        """(alias, first provider name) for every explicit route."""
        return [(alias, t[0][0].name) for alias, t in self._routes.items() if alias != WILDCARD_ROUTE]


def route_signature(targets: list[Target]) -> str:
    return "|".join(f"{t.provider.name}:{t.model}" for t in targets)
