"""Durable Object classes of the Worker (re-exported by ``src/entry.py``, where the runtime
looks for them). Each only forwards to ``flaregate.hosts.edge.objects``."""
