"""Exporting request telemetry to what operators already run: OpenTelemetry (OTLP/HTTP
JSON: traces and metrics) and Datadog (metric series, optionally logs). Each is off until
configured; all are fed by the metrics hub and sent from its wake-ups, never on a
request's path (see ``exporters.py``)."""

from .exporters import Exporters, build_exporters
from .settings import EXPORT_VARS, ExportSettings, export_from_vars

__all__ = ["EXPORT_VARS", "ExportSettings", "Exporters", "build_exporters", "export_from_vars"]
