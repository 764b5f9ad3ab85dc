"""The operator console: ``/metrics``, ``/v1/analytics``, the health part of ``/health``,
``/v1/logs`` and the live dashboard, all read from the metrics hub through its client port."""
