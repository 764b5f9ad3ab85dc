"""In-request telemetry: the analytics event each request sends to the hub, error classes,
structured logs, request-log bodies, tracing, the profiler, alerts, Prometheus exposition and
the exporters (the hub is :mod:`flaregate.hub`, the operator endpoints :mod:`flaregate.console`)."""
