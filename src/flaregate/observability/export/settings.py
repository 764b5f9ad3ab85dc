"""The exporters' settings, from the standard variable names where a standard exists.

OpenTelemetry reads the SDK's own names (``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``,
``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``), Datadog
the agent's (``DD_API_KEY``, ``DD_SITE``, ``DD_TAGS``). Each exporter is off until its
endpoint (OTLP) or API key (Datadog) is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, SecretStr

from ..._variables import set_fields

_OTLP_VARS = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "endpoint",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "traces_endpoint",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "metrics_endpoint",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "timeout_ms",
    "OTEL_SERVICE_NAME": "service_name",
    "OTEL_BSP_SCHEDULE_DELAY": "schedule_delay_ms",
    "OTEL_BSP_MAX_QUEUE_SIZE": "max_queue_size",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "max_export_batch_size",
    "OTEL_METRIC_EXPORT_INTERVAL": "metric_export_interval_ms",
}
_OTLP_HEADER_VARS = {"OTEL_EXPORTER_OTLP_HEADERS": "headers", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "traces_headers",
                     "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "metrics_headers"}
_DATADOG_VARS = {
    "DD_API_KEY": "api_key",
    "DD_SITE": "site",
    "DATADOG_API_URL": "api_url",
    "DATADOG_LOGS_URL": "logs_url",
    "DD_LOGS_ENABLED": "logs",
    "DATADOG_FLUSH_SECONDS": "flush_seconds",
    "DATADOG_QUEUE_SIZE": "queue_size",
}
_SHARED_VARS = {"EXPORT_MAX_ATTEMPTS": "max_attempts", "EXPORT_RETRY_BASE_SECONDS": "retry_base_seconds"}
EXPORT_VARS = (*_OTLP_VARS, *_OTLP_HEADER_VARS, "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_TRACES_EXPORTER",
               "OTEL_METRICS_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_RESOURCE_ATTRIBUTES", *_DATADOG_VARS, "DD_TAGS",
               *_SHARED_VARS)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OtlpSettings(_Model):
    endpoint: str | None = None  # base URL: /v1/traces and /v1/metrics are appended
    traces_endpoint: str | None = None  # full URLs, used as they are (the spec's rule)
    metrics_endpoint: str | None = None
    traces: bool = True  # OTEL_TRACES_EXPORTER=none turns one signal off
    metrics: bool = True
    headers: dict[str, SecretStr] = {}  # OTEL_EXPORTER_OTLP_HEADERS: often an API key
    traces_headers: dict[str, SecretStr] = {}
    metrics_headers: dict[str, SecretStr] = {}
    timeout_ms: int = Field(default=10_000, ge=1)
    service_name: str = "flaregate"
    resource_attributes: dict[str, str] = {}
    schedule_delay_ms: int = Field(default=5000, ge=0)
    max_queue_size: int = Field(default=2048, ge=1, le=100_000)
    max_export_batch_size: int = Field(default=512, ge=1, le=10_000)
    metric_export_interval_ms: int = Field(default=60_000, ge=100)

    def url(self, signal: str) -> str | None:
        """Where ``signal`` ("traces" or "metrics") goes; None: that signal is off."""
        if not (self.traces if signal == "traces" else self.metrics):
            return None
        explicit = self.traces_endpoint if signal == "traces" else self.metrics_endpoint
        if explicit:
            return explicit
        if self.endpoint:
            return self.endpoint.rstrip("/") + f"/v1/{signal}"
        return None

    def signal_headers(self, signal: str) -> dict[str, str]:
        own = self.traces_headers if signal == "traces" else self.metrics_headers
        return {name: value.get_secret_value() for name, value in {**self.headers, **own}.items()}


class DatadogSettings(_Model):
    api_key: SecretStr | None = None  # DD_API_KEY (a secret): unset, the exporter is off
    site: str = "datadoghq.com"
    api_url: str | None = None  # default https://api.{site}; tests point it at a local receiver
    logs: bool = False  # DD_LOGS_ENABLED: request records to the logs intake as well
    logs_url: str | None = None  # default https://http-intake.logs.{site}
    tags: tuple[str, ...] = ()
    flush_seconds: PositiveFloat = 10.0
    queue_size: int = Field(default=2048, ge=1, le=100_000)

    def series_url(self) -> str:
        return (self.api_url or f"https://api.{self.site}").rstrip("/") + "/api/v2/series"

    def logs_intake_url(self) -> str:
        return (self.logs_url or f"https://http-intake.logs.{self.site}").rstrip("/") + "/api/v2/logs"


class ExportSettings(_Model):
    otlp: OtlpSettings = OtlpSettings()
    datadog: DatadogSettings = DatadogSettings()
    max_attempts: int = Field(default=5, ge=1, le=50)  # per batch, then it is dropped (and counted)
    retry_base_seconds: float = Field(default=1.0, ge=0)  # doubled per failed attempt, at most 60 s

    @property
    def enabled(self) -> bool:
        return bool(self.otlp.url("traces") or self.otlp.url("metrics") or self.datadog.api_key)


def _pairs(text: str, var: str) -> dict[str, str]:
    """``k=v,k2=v2`` with URL-encoded values (the OTel spec's header and resource format)."""
    pairs = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{var}: expected name=value pairs separated by commas")
        pairs[unquote(name.strip())] = unquote(value.strip())
    return pairs


def _flag(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


# The raw fragments pydantic validates: strings as set, and what this module already parsed.
_OtlpData = dict[str, str | bool | dict[str, str]]
_DatadogData = dict[str, str | bool | list[str]]


def export_from_vars(vars: Mapping[str, str]) -> dict[str, str | _OtlpData | _DatadogData]:
    """The ``export`` part of the settings data (validated with the rest); raises ValueError
    with the variable's name for a malformed pair list or an unsupported protocol."""
    otlp: _OtlpData = {**set_fields(vars, _OTLP_VARS)}
    for var, field in _OTLP_HEADER_VARS.items():
        if vars.get(var, "").strip():
            otlp[field] = _pairs(vars[var], var)
    if vars.get("OTEL_RESOURCE_ATTRIBUTES", "").strip():
        otlp["resource_attributes"] = _pairs(vars["OTEL_RESOURCE_ATTRIBUTES"], "OTEL_RESOURCE_ATTRIBUTES")
    protocol = vars.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
    if protocol and protocol != "http/json":  # protobuf would be a native dependency in the Worker
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: only http/json is supported, not {protocol!r}")
    for var, field in (("OTEL_TRACES_EXPORTER", "traces"), ("OTEL_METRICS_EXPORTER", "metrics")):
        if vars.get(var, "").strip():
            otlp[field] = vars[var].strip().lower() != "none"
    if _flag(vars.get("OTEL_SDK_DISABLED", "")):
        otlp = {"traces": False, "metrics": False}
    datadog: _DatadogData = {**set_fields(vars, _DATADOG_VARS)}
    if "logs" in datadog:
        datadog["logs"] = _flag(str(datadog["logs"]))
    if vars.get("DD_TAGS", "").strip():  # the agent's format: space or comma separated
        datadog["tags"] = [tag for tag in vars["DD_TAGS"].replace(",", " ").split() if tag]
    data: dict[str, str | _OtlpData | _DatadogData] = {**set_fields(vars, _SHARED_VARS)}
    if otlp:
        data["otlp"] = otlp
    if datadog:
        data["datadog"] = datadog
    return data
