"""What the operator sees: analytics events, the metrics hub object and its store, logs,
Prometheus, tracing, the profiler, the health score, alerts and the operator endpoints."""
