"""Where a request goes: routes and strategies, health and circuit breakers, probes, and the
upstream caller (retries, failover, deadlines) with its resilience settings."""
