"""One route table: every path the gateway answers, its methods, who may call it, its 405.

Each package declares its routes (``def routes(self) -> list[Route]`` on the object that
serves them); the gateway builds one :class:`RouteTable` from those and its own, matches
every request against it, and generates the route listing and ``/openapi.json`` (the
``api=True`` routes) from it. ``python -m flaregate.routes`` prints the table.

Matching is billed per CPU-ms on the edge, so an exact path is one dict lookup; only a
miss scans the templates (``/admin/keys/{key_id}``) that have as many segments as the
path. A template parameter is one segment of ``[A-Za-z0-9_.:-]{1,128}`` (never ``/``),
handed to the handler as ``request.params``.

``access`` says who may call a route; the handlers still enforce it themselves (the table
only documents it): ``public`` nobody needed, ``key`` a gateway key, ``admin`` the admin
key (signed where ``SIGNED_ROUTES`` says, checked before routing), ``observer`` the admin
key or the read-only observer key ``FLAREGATE_OBSERVER_KEY`` (browser forms accepted;
request-log bodies for the admin key only).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, cast

from pydantic import BaseModel

from .clock import SystemClock
from .errors import GatewayError
from .http import Request, Response
from .ports import Ports
from .redaction import redact

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]
Access = Literal["public", "key", "admin", "observer"]

ACCESS: tuple[Access, ...] = ("public", "key", "admin", "observer")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SEGMENT = r"[A-Za-z0-9_.:-]{1,128}"  # one template parameter: a path segment, no "/"

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LITERAL = re.compile(r"[A-Za-z0-9_.:~-]*")  # a fixed segment of a declared path
_SEGMENT = re.compile(SEGMENT)
_NO_PARAMS: Mapping[str, str] = MappingProxyType({})
_BODY_METHODS = ("POST", "PUT", "PATCH")
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "code": {"type": ["string", "null"]}, "param": {"type": ["string", "null"]}},
    }},
}


def _segments(path: str) -> list[tuple[str, bool]]:
    """A declared path's segments as (text, is a parameter); ValueError if malformed."""
    if not path.startswith("/"):
        raise ValueError(f"route path {path!r} must start with '/'")
    segments: list[tuple[str, bool]] = []
    for part in path[1:].split("/"):
        param = _PARAM.fullmatch(part)
        if param is not None:
            segments.append((param.group(1), True))
        elif _LITERAL.fullmatch(part):
            segments.append((part, False))
        else:
            raise ValueError(f"route path {path!r}: segment {part!r} must be literal or a whole {{name}}")
    names = [text for text, is_param in segments if is_param]
    if len(set(names)) != len(names):
        raise ValueError(f"route path {path!r} names a parameter twice")
    return segments


def _overlap(a: list[tuple[str, bool]], b: list[tuple[str, bool]]) -> bool:
    """Whether some concrete path matches both shapes (same length, every segment compatible)."""
    if len(a) != len(b):
        return False
    for (text_a, param_a), (text_b, param_b) in zip(a, b, strict=True):
        if param_a and param_b:
            continue
        if param_a or param_b:
            if not _SEGMENT.fullmatch(text_b if param_a else text_a):
                return False
        elif text_a != text_b:
            return False
    return True


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity: usable as a key
class Route:
    path: str                      # "/v1/chat/completions" or a template "/admin/keys/{key_id}"
    methods: Mapping[str, Handler]  # "GET" -> handler, ...
    access: Access
    summary: str                   # one line for the listing / OpenAPI
    api: bool = False              # part of the OpenAI-compatible API (conformance tests, /openapi.json)
    body: type[BaseModel] | None = None  # the request body model of an API route, for /openapi.json
    example: Mapping[str, Any] | None = None  # a valid body for it (the conformance test sends it)
    media_type: str = "application/json"  # the body's: multipart/form-data for an upload
    upstream: bool = False  # answered by a provider: load shedding applies (x-flaregate-upstream)

    def __post_init__(self) -> None:
        _segments(self.path)
        if not self.methods:
            raise ValueError(f"route {self.path} declares no method")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"route {self.path}: unknown method {unknown[0]!r} (upper case, one of {sorted(METHODS)})")
        if self.access not in ACCESS:
            raise ValueError(f"route {self.path}: access must be one of {ACCESS}, not {self.access!r}")
        if self.body is not None and not self.api:
            raise ValueError(f"route {self.path}: only an api route documents a body model")
        object.__setattr__(self, "methods", MappingProxyType(dict(self.methods)))  # frozen all the way

    @property
    def params(self) -> tuple[str, ...]:
        """The template's parameter names, in order (empty for an exact path)."""
        return tuple(_PARAM.findall(self.path))


def unknown_url(path: str) -> GatewayError:
    """The 404 for a path no route declares (the path redacted and truncated)."""
    return GatewayError(404, f"Unknown path {redact(path[:200])}.", code="unknown_url")


class RouteTable:
    """The routes of the whole gateway; :meth:`match` picks the handler of a request."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes: list[Route] = []
        self._exact: dict[str, Route] = {}
        self._templates: dict[int, list[tuple[re.Pattern[str], Route]]] = {}  # by the number of "/"
        self._allow: dict[str, str] = {}
        shapes: dict[int, list[tuple[list[tuple[str, bool]], bool, Route]]] = {}  # by length
        for route in routes:
            if route.path in self._allow:
                raise ValueError(f"route {route.path} is declared twice")
            shape = _segments(route.path)
            template = any(is_param for _, is_param in shape)
            for other_shape, other_template, other in shapes.get(len(shape), ()):
                if (template or other_template) and _overlap(shape, other_shape):
                    raise ValueError(f"routes {other.path} and {route.path} overlap: a path can match both")
            shapes.setdefault(len(shape), []).append((shape, template, route))
            self._routes.append(route)
            self._allow[route.path] = ", ".join(sorted(route.methods))
            if template:
                pattern = "/" + "/".join(f"(?P<{text}>{SEGMENT})" if is_param else re.escape(text)
                                         for text, is_param in shape)
                self._templates.setdefault(len(shape), []).append((re.compile(pattern), route))
            else:
                self._exact[route.path] = route

    def match(self, method: str, path: str) -> tuple[Route, Handler, Mapping[str, str]]:
        """(route, handler, template parameters) of a request; GatewayError 404 ``unknown_url``
        or 405 ``method_not_allowed`` (with ``allow``)."""
        route = self._exact.get(path)
        params = _NO_PARAMS
        if route is None:
            for pattern, candidate in self._templates.get(path.count("/"), ()):
                found = pattern.fullmatch(path)
                if found is not None:
                    route, params = candidate, found.groupdict()
                    break
            else:
                raise unknown_url(path)
        handler = route.methods.get(method)
        if handler is None:
            raise GatewayError(405, f"Method {method[:16]} is not allowed on {route.path}.",
                               code="method_not_allowed", headers={"allow": self._allow[route.path]})
        return route, handler, params

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, path: object) -> bool:
        """Whether a declared path (exact or template text) is in the table."""
        return path in self._allow

    def listing(self) -> str:
        """A plain-text table, one row per path: path, methods, access, api, summary."""
        rows = [("PATH", "METHODS", "ACCESS", "API", "SUMMARY")]
        rows += [(r.path, " ".join(sorted(r.methods)), r.access, "api" if r.api else "", r.summary)
                 for r in sorted(self._routes, key=lambda r: r.path)]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)), row[4]])
                 .rstrip() for row in rows]
        return "\n".join(lines) + "\n"

    def openapi(self, version: str) -> dict[str, Any]:
        """An OpenAPI 3.1 document for the ``api=True`` routes."""
        api = sorted((r for r in self._routes if r.api), key=lambda r: r.path)
        schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
        refs: dict[type[BaseModel], Any] = {}
        models = sorted({r.body for r in api if r.body is not None}, key=lambda m: (m.__module__, m.__qualname__))
        if models:
            from pydantic.json_schema import models_json_schema  # only /openapi.json needs it

            mapping, definitions = models_json_schema([(m, "validation") for m in models],
                                                      ref_template="#/components/schemas/{model}")
            schemas.update(definitions.get("$defs", {}))
            refs = {m: mapping[(m, "validation")] for m in models}
        error = {"description": "An OpenAI-style error.",
                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        paths: dict[str, Any] = {}
        for route in api:
            item: dict[str, Any] = {}
            parameters = [{"name": name, "in": "path", "required": True,
                           "schema": {"type": "string", "pattern": f"^{SEGMENT}$"}} for name in route.params]
            for method in sorted(route.methods):
                operation: dict[str, Any] = {
                    "summary": route.summary,
                    "operationId": _operation_id(method, route.path),
                    "responses": {"200": {"description": "Success."}, "default": error},
                }
                if parameters:
                    operation["parameters"] = parameters
                if route.body is not None and method in _BODY_METHODS:
                    content: dict[str, Any] = {"schema": refs[route.body]}
                    if route.example is not None:
                        content["example"] = dict(route.example)
                    operation["requestBody"] = {"required": True, "content": {route.media_type: content}}
                if route.upstream:
                    operation["x-flaregate-upstream"] = True
                if route.access == "public":
                    operation["security"] = []
                item[method.lower()] = operation
            paths[route.path] = item
        return {
            "openapi": "3.1.0",
            "info": {"title": "Flaregate", "version": version,
                     "description": "The OpenAI-compatible API of the Flaregate gateway."},
            "paths": paths,
            "components": {"schemas": schemas,
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
        }


def _operation_id(method: str, path: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", path) if w]
    return method.lower() + "".join(w[:1].upper() + w[1:] for w in words)


# -- python -m flaregate.routes --------------------------------------------------------------

class _Unused:
    """A port the listing never calls: building the table does no I/O."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        raise RuntimeError(f"the route listing does no I/O, yet {self._name}.{attr} was used")


def _listing_ports() -> Ports:
    """Ports for a Gateway that is only built, never called."""
    unused = cast(Any, _Unused)
    return Ports(clock=SystemClock(), cache=unused("cache"), upstream=unused("upstream"),
                 tasks=unused("tasks"), rate_limiter=unused("rate_limiter"),
                 metrics_hub=unused("metrics_hub"), security=unused("security"), blobs=unused("blobs"),
                 jobs=unused("jobs"))


def package_routes(gateway: Any) -> list[Route]:
    """The routes the packages declare, taken from a built Gateway (until the gateway
    exposes its own table as ``Gateway.routes``)."""
    from .cache.admin import CacheAdmin
    from .ratelimits.admin import RateLimitAdmin

    return [
        *gateway.admin_api.routes(),
        *RateLimitAdmin(gateway.settings, gateway.ratelimits).routes(),
        *gateway.observability.routes(),
        *gateway.cache_warming.routes(),
        *CacheAdmin(gateway.caching).routes(),
    ]


def main() -> None:
    from .config import settings_from_vars
    from .gateway import Gateway

    gateway = Gateway(settings_from_vars({}), _listing_ports())
    table = getattr(gateway, "routes", None)
    if isinstance(table, RouteTable):
        print(table.listing(), end="")
    else:
        print(RouteTable(package_routes(gateway)).listing(), end="")
        print("(the packages' routes only: the gateway does not expose its table as Gateway.routes yet)")


if __name__ == "__main__":  # run as flaregate.routes, not __main__: one Route, one RouteTable class
    from flaregate.routes import main as _main

    _main()
