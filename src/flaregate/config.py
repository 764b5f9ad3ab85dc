"""One settings model for both hosts, read from flat string variables.

The variables come from ``wrangler.toml`` ``[vars]`` (or ``[env.NAME.vars]``), secrets
(``.dev.vars`` locally, ``wrangler secret put`` on the edge) and, locally, the process
environment. Structured values (providers, routes) are JSON strings.

Each concept owns its settings model (``routing/settings.py``, ``providers/settings.py``,
``security/settings.py``, ``cache/settings.py``, ...); this module only assembles them into
:class:`Settings` and reads the variables, and none of those modules imports it back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ._variables import set_fields
from .batches.settings import BATCH_VARS, BatchSettings, batches_from_vars
from .cache.semantic.settings import check_semantic_route, parse_semantic_route
from .cache.settings import CacheSettings
from .guardrails.policy import GuardrailSettings
from .hub.settings import RequestLogSettings
from .mcp_gateway.settings import VARS as MCP_VARS
from .mcp_gateway.settings import McpSettings
from .mcp_gateway.settings import settings_data as mcp_settings_data
from .observability.export.settings import EXPORT_VARS, ExportSettings, export_from_vars
from .overload.settings import SheddingSettings
from .providers.settings import MOCK_PROVIDER, ProviderConfig
from .ratelimits.policies import (
    BudgetPolicy,
    RateLimitPolicy,
    TokenBucketPolicy,
    check_unique_names,
)
from .ratelimits.settings import BudgetAlertSettings
from .realtime.settings import REALTIME_VARS, RealtimeSettings, realtime_from_vars
from .routing.conditions import ConditionalRoute
from .routing.resilience import RESILIENCE_VARS, ResiliencePolicy, resilience_from_vars
from .routing.settings import WILDCARD_ROUTE, RouteConfig, RouteTarget
from .security.secret_strength import production_secret_problems
from .security.settings import SecuritySettings
from .sharding import ShardSettings

# Every variable the gateway reads; hosts use this list to pick values out of their env.
KNOWN_VARS = (
    "ENVIRONMENT",
    "LOG_LEVEL",
    "FLAREGATE_API_KEYS",
    "FLAREGATE_PROVIDERS",
    "FLAREGATE_ROUTES",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "RATE_LIMIT_CAPACITY",
    "RATE_LIMIT_REFILL_PER_SECOND",
    "RATE_LIMIT_PER_HOUR",
    "RATE_LIMIT_LEASE",
    "FLAREGATE_RATE_LIMITS",
    "FLAREGATE_BUDGETS",
    "BUDGET_ALERT_AT",  # soft budget thresholds (ratelimits/settings.py)
    "CACHE_TTL_SECONDS",
    "CACHE_MAX_TTL_SECONDS",
    "CACHE_MEMORY_MAX_ENTRIES",
    "CACHE_MEMORY_MAX_BYTES",
    "CACHE_MEMORY_TTL_SECONDS",  # the old name of CACHE_HOT_TTL_SECONDS
    "CACHE_HOT_TTL_SECONDS", "CACHE_WARM_TTL_SECONDS", "CACHE_COLD_TTL_SECONDS", "CACHE_HOT_PROMOTE_HITS",
    "CACHE_WARM_CONCURRENCY", "CACHE_PREDICTIVE_WARMING", "CACHE_PREDICTIVE_TOP_N",
    "CACHE_PREDICTIVE_INTERVAL_SECONDS",
    "CACHE_MAX_ENTRY_BYTES",
    "CACHE_SKIP_LENGTH_FINISH",
    "CACHE_SINGLE_FLIGHT",
    "MAX_BODY_BYTES",
    "METRICS_TICK_SECONDS",
    "UPSTREAM_TIMEOUT_SECONDS",
    *RESILIENCE_VARS,
    "FLAREGATE_ADMIN_KEY",
    "FLAREGATE_REDIS_URL",  # the local host's shared backend for several replicas (hosts/local/redis_backend.py)
    *(  # security and webhooks (see SecuritySettings)
        "FLAREGATE_SIGNING_SECRET", "SIGNED_ROUTES", "SIGNATURE_MAX_AGE_SECONDS", "KEY_CACHE_SECONDS",
        "FLAREGATE_OBSERVER_KEY", "AUTH_FAILURE_LIMIT", "AUTH_FAILURE_WINDOW_SECONDS",
        "MAX_MESSAGES", "MAX_MESSAGE_CHARS", "MAX_JSON_DEPTH", "MAX_HEADER_BYTES", "MAX_HEADER_COUNT",
        "CORS_ALLOW_ORIGINS", "CORS_MAX_AGE_SECONDS", "ANONYMIZE_IPS", "WEBHOOK_ALLOW_PRIVATE_TARGETS",
        "WEBHOOK_MAX_ATTEMPTS", "WEBHOOK_RETRY_BASE_SECONDS", "WEBHOOK_TIMEOUT_SECONDS",
    ),
    # observability (issue 6)
    "ANALYTICS_BATCH_SIZE",
    "ANALYTICS_BATCH_DELAY_MS",
    "HEALTH_LATENCY_TARGET_MS",
    "WS_OUTBOX_LIMIT",
    # guardrails (issue 18)
    "FLAREGATE_GUARDRAILS",
    "FLAREGATE_CONDITIONAL_ROUTES",
    "METRICS_TAG_LABELS",
    "REPORT_TAGS",  # tags that are spend-report dimensions (group_by=tag:NAME, kept a year)
    # request logs (issue 16)
    "LOG_RETENTION_DEBUG_SECONDS", "LOG_RETENTION_INFO_SECONDS", "LOG_RETENTION_WARN_SECONDS",
    "LOG_RETENTION_ERROR_SECONDS", "LOG_BODIES", "LOG_BODY_MAX_BYTES", "LOG_PRIVATE_ROUTES",
    "LOG_UNAUTHENTICATED_MAX_RECORDS", "LOG_UNAUTHENTICATED_RETENTION_SECONDS", "LOG_MAX_BYTES",
    "LOG_SAMPLE_INFO_PER_SECOND",
    # sharded objects (issue 31)
    "HUB_SHARDS", "HUB_PUBLISH_TIMEOUT_SECONDS", "HUB_BUFFER_BATCHES", "SECURITY_SHARDS", "SECURITY_SHARDS_PREVIOUS",
    *EXPORT_VARS,  # OpenTelemetry and Datadog exporters (observability/export/settings.py)
    # load shedding (overload/)
    "LOAD_SHEDDING", "SHED_INITIAL_LIMIT", "SHED_MIN_LIMIT", "SHED_MAX_LIMIT", "SHED_SLOW_AFTER_SECONDS",
    *BATCH_VARS,  # the Files and Batches APIs (batches/settings.py)
    *MCP_VARS,  # the MCP gateway (mcp_gateway/settings.py)
    *REALTIME_VARS,  # Realtime sessions (realtime/settings.py)
)


class ConfigError(ValueError):
    """Configuration that cannot be used; the message names the offending field."""


class InsecureConfigError(ConfigError):
    """Secrets the production environment refuses (``security/secret_strength.py``)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(_Model):
    environment: str = "development"
    log_level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    api_keys: tuple[SecretStr, ...] = ()
    providers: tuple[ProviderConfig, ...] = (ProviderConfig(name=MOCK_PROVIDER, kind="mock"),)
    routes: dict[str, RouteConfig] = {
        "mock-1": RouteConfig(targets=(RouteTarget(provider=MOCK_PROVIDER),))
    }
    rate_limit: TokenBucketPolicy = TokenBucketPolicy()
    rate_limits: tuple[RateLimitPolicy, ...] = ()  # added to (or, named "default", replacing) rate_limit
    budgets: tuple[BudgetPolicy, ...] = ()
    budget_alerts: BudgetAlertSettings = BudgetAlertSettings()
    cache_ttl_seconds: int = Field(default=300, ge=0)
    cache: CacheSettings = CacheSettings()
    batches: BatchSettings = BatchSettings()
    request_logs: RequestLogSettings = RequestLogSettings()
    export: ExportSettings = ExportSettings()
    shedding: SheddingSettings = SheddingSettings()
    realtime: RealtimeSettings = RealtimeSettings()
    admin_key: SecretStr | None = None  # /admin/*, /ws, /metrics, /v1/analytics; unset: disabled
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    metrics_tick_seconds: PositiveFloat = 1.0
    upstream_timeout_seconds: PositiveFloat = 60.0
    resilience: ResiliencePolicy = ResiliencePolicy()
    security: SecuritySettings = SecuritySettings()
    shards: ShardSettings = ShardSettings()
    redis_url: SecretStr | None = None  # local host only: state shared by replicas; unset: SQLite
    # Observability (the admin key above also opens /ws, /metrics and /v1/analytics).
    analytics_batch_size: int = Field(default=50, ge=1, le=1000)
    # 400 ms: fewer, larger publishes (each one the hub pays a transaction and its state
    # reads for), while a dashboard still sees a request within one tick plus this delay.
    analytics_batch_delay_ms: int = Field(default=400, ge=0, le=10_000)
    health_latency_target_ms: PositiveFloat = 2000.0
    ws_outbox_limit: int = Field(default=64, ge=4, le=10_000)  # room for the greeting and a tick
    guardrails: GuardrailSettings = GuardrailSettings()  # FLAREGATE_GUARDRAILS (guardrails/policy.py)
    conditional_routes: dict[str, ConditionalRoute] = {}  # FLAREGATE_CONDITIONAL_ROUTES (routing/conditions.py)
    metrics_tag_labels: tuple[str, ...] = Field(default=(), max_length=8)  # tags that become /metrics labels
    mcp: McpSettings = McpSettings()  # FLAREGATE_MCP_SERVERS, MCP_* (mcp_gateway/settings.py)
    # Tags kept as spend-report dimensions (hub_dimension, a year): the operator's, never all a client sends.
    report_tags: tuple[str, ...] = Field(default=(), max_length=8)

    @model_validator(mode="after")
    def _conditional_routes_name_routes(self) -> Settings:
        for alias, route in self.conditional_routes.items():
            if alias in self.routes:
                raise ValueError(f"conditional route {alias!r} is also a plain route")
            for where, target in [*((f"branches.{i}.route", b.route) for i, b in enumerate(route.branches)),
                                  ("default", route.default)]:
                if target not in self.routes:
                    raise ValueError(f"conditional route {alias!r}: {where} names unknown route {target!r}")
        return self

    @field_validator("routes", mode="before")
    @classmethod
    def _route_shorthand(cls, routes: Any) -> Any:
        # A bare list of targets is an ordered-fallback route.
        if isinstance(routes, dict):
            return {alias: {"targets": spec} if isinstance(spec, list | tuple) else spec
                    for alias, spec in routes.items()}
        return routes

    @field_validator("routes")
    @classmethod
    def _routes_have_targets(cls, routes: dict[str, RouteConfig]) -> dict:
        for alias, route in routes.items():
            if not route.targets:
                raise ValueError(f"route {alias!r} has no targets")
            if route.strategy == "weighted" and not any(t.weight > 0 for t in route.targets):
                raise ValueError(f"route {alias!r}: weighted strategy needs a target with weight > 0")
        return routes

    @model_validator(mode="after")
    def _targets_exist(self) -> Settings:
        names = [p.name for p in self.providers]
        if len(set(names)) != len(names):
            raise ValueError("provider names must be unique")
        for alias, targets in self.routes.items():
            for target in targets:
                if target.provider not in names:
                    raise ValueError(f"route {alias!r} names unknown provider {target.provider!r}")
        for alias in self.cache.route_ttl_seconds:
            if alias not in self.routes:
                raise ValueError(f"cache TTL for unknown route {alias!r}")
        for alias in self.cache.route_key_tags:
            if alias not in self.routes:
                raise ValueError(f"cache key tags for unknown route {alias!r}")
        for alias, semantic in self.cache.route_semantic.items():
            check_semantic_route(alias, semantic, self.routes)
        check_unique_names(self.rate_limits, self.budgets)
        return self


def _json(vars: Mapping[str, str], name: str) -> Any:
    try:
        return json.loads(vars[name])
    except ValueError as exc:
        raise ConfigError(f"{name}: not valid JSON ({exc})") from None


def _route_target(spec: Any) -> Any:
    # "provider" or "provider/model" as shorthand for {"provider": ..., "model": ...}
    if isinstance(spec, str):
        provider, _, model = spec.partition("/")
        return {"provider": provider, "model": model or None}
    return spec


def _route(alias: str, spec: Any, ttls: dict[str, Any], key_tags: dict[str, Any],
           semantic: dict[str, Any] | None = None) -> Any:
    # A route is a list of targets, one target (ordered fallback), or
    # {"targets": [...], "strategy": S, "cache_ttl_seconds": N, "cache_key_tags": [TAG, ...]}.
    strategy = None
    if isinstance(spec, dict) and "targets" in spec:
        extra = set(spec) - {"targets", "strategy", "cache_ttl_seconds", "cache_key_tags", "semantic_cache"}
        if extra:
            raise ConfigError(f"FLAREGATE_ROUTES: route {alias!r} has unknown fields {sorted(extra)}")
        if "cache_ttl_seconds" in spec:
            ttls[alias] = spec["cache_ttl_seconds"]
        if "cache_key_tags" in spec:
            key_tags[alias] = spec["cache_key_tags"]
        if "semantic_cache" in spec and semantic is not None:  # cache/semantic/settings.py
            try:
                semantic[alias] = parse_semantic_route(alias, spec["semantic_cache"])
            except ValueError as exc:
                raise ConfigError(f"FLAREGATE_ROUTES: {exc}") from None
        strategy = spec.get("strategy")
        spec = spec["targets"]
    targets = [_route_target(t) for t in (spec if isinstance(spec, list) else [spec])]
    return {"targets": targets} if strategy is None else {"strategy": strategy, "targets": targets}


def provider_key_names(providers_json: Any) -> list[str]:
    """The secret names that ``FLAREGATE_PROVIDERS`` points at with ``api_key_env`` (hosts that
    read only known names, like the Worker, look these up too)."""
    try:
        raw = json.loads(providers_json) if isinstance(providers_json, str) else None
    except ValueError:
        return []
    return [str(p["api_key_env"]) for p in raw if isinstance(p, dict) and p.get("api_key_env")] \
        if isinstance(raw, list) else []


def _cache(vars: Mapping[str, str], route_ttls: dict[str, Any], route_key_tags: dict[str, Any],
           route_semantic: dict[str, Any] | None = None) -> dict[str, Any]:
    names = {
        "CACHE_MAX_TTL_SECONDS": "max_ttl_seconds",
        "CACHE_MEMORY_MAX_ENTRIES": "memory_max_entries",
        "CACHE_MEMORY_MAX_BYTES": "memory_max_bytes",
        "CACHE_MEMORY_TTL_SECONDS": "hot_ttl_seconds",
        "CACHE_HOT_TTL_SECONDS": "hot_ttl_seconds",  # after the old name: the new one wins
        "CACHE_WARM_TTL_SECONDS": "warm_ttl_seconds",
        "CACHE_COLD_TTL_SECONDS": "cold_ttl_seconds",
        "CACHE_HOT_PROMOTE_HITS": "hot_promote_hits",
        "CACHE_WARM_CONCURRENCY": "warm_concurrency",
        "CACHE_PREDICTIVE_WARMING": "predictive_warming",
        "CACHE_PREDICTIVE_TOP_N": "predictive_top_n",
        "CACHE_PREDICTIVE_INTERVAL_SECONDS": "predictive_interval_seconds",
        "CACHE_MAX_ENTRY_BYTES": "max_entry_bytes",
        "CACHE_SKIP_LENGTH_FINISH": "skip_length_finish",
        "CACHE_SINGLE_FLIGHT": "single_flight",
    }
    cache: dict[str, Any] = set_fields(vars, names)
    if route_ttls:
        cache["route_ttl_seconds"] = route_ttls
    if route_key_tags:
        cache["route_key_tags"] = route_key_tags
    if route_semantic:
        cache["route_semantic"] = route_semantic
    return cache


def _providers(vars: Mapping[str, str]) -> list[dict[str, Any]] | None:
    if "FLAREGATE_PROVIDERS" in vars:
        raw = _json(vars, "FLAREGATE_PROVIDERS")
        if not isinstance(raw, list):
            raise ConfigError("FLAREGATE_PROVIDERS: must be a JSON list of providers")
        providers = []
        for item in raw:
            if isinstance(item, dict) and "api_key_env" in item:
                item = dict(item)
                item["api_key"] = vars.get(item.pop("api_key_env"))
            providers.append(item)
        return providers
    if vars.get("OPENAI_API_KEY"):
        return [
            {
                "name": "openai",
                "kind": "openai",
                "base_url": vars.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
                "api_key": vars["OPENAI_API_KEY"],
            }
        ]
    return None  # the built-in mock provider


def _security(vars: Mapping[str, str]) -> dict[str, Any]:
    fields = {name.lower(): name for name in (
        "SIGNATURE_MAX_AGE_SECONDS", "KEY_CACHE_SECONDS", "MAX_MESSAGES", "MAX_MESSAGE_CHARS",
        "MAX_JSON_DEPTH", "MAX_HEADER_BYTES", "MAX_HEADER_COUNT", "CORS_MAX_AGE_SECONDS",
        "ANONYMIZE_IPS", "WEBHOOK_ALLOW_PRIVATE_TARGETS", "WEBHOOK_MAX_ATTEMPTS",
        "WEBHOOK_RETRY_BASE_SECONDS", "WEBHOOK_TIMEOUT_SECONDS", "AUTH_FAILURE_LIMIT",
        "AUTH_FAILURE_WINDOW_SECONDS")}
    data: dict[str, Any] = set_fields(vars, {var: field for field, var in fields.items()})
    if vars.get("FLAREGATE_SIGNING_SECRET"):
        data["signing_secret"] = vars["FLAREGATE_SIGNING_SECRET"]
    if vars.get("FLAREGATE_OBSERVER_KEY", "").strip():  # a stray space in .dev.vars: unset
        data["observer_key"] = vars["FLAREGATE_OBSERVER_KEY"].strip()
    for var, field in (("SIGNED_ROUTES", "signed_routes"), ("CORS_ALLOW_ORIGINS", "cors_allow_origins")):
        if var in vars:  # present but empty means "none" (e.g. signing off everywhere)
            data[field] = [item.strip() for item in vars[var].split(",") if item.strip()]
    return data


def settings_from_vars(vars: Mapping[str, str]) -> Settings:
    """Build validated settings from flat string variables (missing ones take defaults)."""
    data: dict[str, Any] = {}
    simple = {
        "ENVIRONMENT": "environment",
        "LOG_LEVEL": "log_level",
        "CACHE_TTL_SECONDS": "cache_ttl_seconds",
        "MAX_BODY_BYTES": "max_body_bytes",
        "METRICS_TICK_SECONDS": "metrics_tick_seconds",
        "UPSTREAM_TIMEOUT_SECONDS": "upstream_timeout_seconds",
        "FLAREGATE_ADMIN_KEY": "admin_key",
        "ANALYTICS_BATCH_SIZE": "analytics_batch_size",
        "ANALYTICS_BATCH_DELAY_MS": "analytics_batch_delay_ms",
        "HEALTH_LATENCY_TARGET_MS": "health_latency_target_ms",
        "WS_OUTBOX_LIMIT": "ws_outbox_limit",
        "FLAREGATE_REDIS_URL": "redis_url",
    }
    for var, field in simple.items():
        if vars.get(var, "") != "":
            data[field] = vars[var].lower() if var == "LOG_LEVEL" else vars[var]
    if "admin_key" in data:
        data["admin_key"] = data["admin_key"].strip() or None  # a stray space in .dev.vars
    keys = [k.strip() for k in vars.get("FLAREGATE_API_KEYS", "").split(",") if k.strip()]
    if keys:
        data["api_keys"] = keys
    providers = _providers(vars)
    if providers is not None:
        data["providers"] = providers
    route_ttls: dict[str, Any] = {}
    route_key_tags: dict[str, Any] = {}
    route_semantic: dict[str, Any] = {}
    if "FLAREGATE_ROUTES" in vars:
        raw = _json(vars, "FLAREGATE_ROUTES")
        if not isinstance(raw, dict):
            raise ConfigError("FLAREGATE_ROUTES: must be a JSON object of alias -> targets")
        data["routes"] = {alias: _route(alias, spec, route_ttls, route_key_tags, route_semantic) for alias, spec in raw.items()}
    elif providers is not None:
        # Providers but no routes: every model name goes to the first provider unchanged.
        first = providers[0].get("name") if isinstance(providers[0], dict) else None
        data["routes"] = {WILDCARD_ROUTE: [{"provider": first}]}
    limit: dict[str, Any] = {}
    if vars.get("RATE_LIMIT_CAPACITY"):
        limit["capacity"] = vars["RATE_LIMIT_CAPACITY"]
    if vars.get("RATE_LIMIT_REFILL_PER_SECOND"):
        limit["refill_per_second"] = vars["RATE_LIMIT_REFILL_PER_SECOND"]
    elif vars.get("RATE_LIMIT_PER_HOUR"):
        try:
            limit["refill_per_second"] = float(vars["RATE_LIMIT_PER_HOUR"]) / 3600
        except ValueError:
            raise ConfigError("RATE_LIMIT_PER_HOUR: must be a number") from None
    if vars.get("RATE_LIMIT_LEASE"):
        limit["lease"] = vars["RATE_LIMIT_LEASE"]
    if limit:
        data["rate_limit"] = limit
    resilience = resilience_from_vars(vars)
    if resilience:
        data["resilience"] = resilience
    for var, field in (("FLAREGATE_RATE_LIMITS", "rate_limits"), ("FLAREGATE_BUDGETS", "budgets")):
        if vars.get(var, "").strip():
            policies = _json(vars, var)
            if not isinstance(policies, list):
                raise ConfigError(f"{var}: must be a JSON list of policies")
            data[field] = policies
    data["security"] = _security(vars)
    shards = set_fields(vars, {"HUB_SHARDS": "hub_shards", "HUB_PUBLISH_TIMEOUT_SECONDS": "hub_publish_timeout_seconds",
                               "HUB_BUFFER_BATCHES": "hub_buffer_batches", "SECURITY_SHARDS": "security_shards",
                               "SECURITY_SHARDS_PREVIOUS": "security_shards_previous"})
    if shards:
        data["shards"] = shards

    cache = _cache(vars, route_ttls, route_key_tags, route_semantic)
    if cache:
        data["cache"] = cache
    if vars.get("FLAREGATE_GUARDRAILS", "").strip():
        data["guardrails"] = _json(vars, "FLAREGATE_GUARDRAILS")
    if vars.get("METRICS_TAG_LABELS", "").strip():
        data["metrics_tag_labels"] = [t.strip() for t in vars["METRICS_TAG_LABELS"].split(",") if t.strip()]
    if vars.get("REPORT_TAGS", "").strip():
        data["report_tags"] = [t.strip() for t in vars["REPORT_TAGS"].split(",") if t.strip()]
    if vars.get("FLAREGATE_CONDITIONAL_ROUTES", "").strip():
        data["conditional_routes"] = _json(vars, "FLAREGATE_CONDITIONAL_ROUTES")
    request_logs: dict[str, Any] = {f"{level}_seconds": vars[f"LOG_RETENTION_{level.upper()}_SECONDS"]
                                    for level in ("debug", "info", "warn", "error")
                                    if vars.get(f"LOG_RETENTION_{level.upper()}_SECONDS", "") != ""}
    if vars.get("LOG_BODIES", "") != "":
        request_logs["bodies"] = vars["LOG_BODIES"].strip().lower()
    if vars.get("LOG_PRIVATE_ROUTES", "").strip():
        request_logs["private_routes"] = [r.strip() for r in vars["LOG_PRIVATE_ROUTES"].split(",") if r.strip()]
    if vars.get("LOG_BODY_MAX_BYTES", "") != "":
        request_logs["body_max_bytes"] = vars["LOG_BODY_MAX_BYTES"]
    request_logs.update(set_fields(vars, {"LOG_UNAUTHENTICATED_MAX_RECORDS": "unauthenticated_max_records",
                                          "LOG_UNAUTHENTICATED_RETENTION_SECONDS": "unauthenticated_seconds",
                                          "LOG_MAX_BYTES": "max_bytes",
                                          "LOG_SAMPLE_INFO_PER_SECOND": "sample_info_per_second"}))
    if request_logs:
        data["request_logs"] = request_logs
    try:
        data["export"] = export_from_vars(vars)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if "BUDGET_ALERT_AT" in vars:
        raw = vars["BUDGET_ALERT_AT"].strip().lower()
        data["budget_alerts"] = {"alert_at": [] if raw in ("", "off", "0") else
                                 [part.strip() for part in raw.split(",") if part.strip()]}
    shed_names = {"LOAD_SHEDDING": "enabled", "SHED_INITIAL_LIMIT": "initial_limit", "SHED_MIN_LIMIT": "min_limit",
                  "SHED_MAX_LIMIT": "max_limit", "SHED_SLOW_AFTER_SECONDS": "slow_after_seconds"}
    shedding = set_fields(vars, shed_names)
    if shedding:
        data["shedding"] = shedding
    batches = batches_from_vars(vars)
    if batches:
        data["batches"] = batches
    try:
        mcp = mcp_settings_data(vars)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if mcp:
        data["mcp"] = mcp
    try:
        realtime = realtime_from_vars(vars)
    except ValueError as exc:
        raise ConfigError(f"REALTIME_AZURE_API_VERSIONS: {exc}") from None
    if realtime:
        data["realtime"] = realtime
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
    weak = production_secret_problems(settings.environment, settings.admin_key, settings.security.signing_secret,
                                      settings.api_keys, settings.security.observer_key)
    if weak:
        raise InsecureConfigError("insecure configuration for production: " + "; ".join(weak))
    return settings
