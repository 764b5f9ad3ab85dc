"""The Cloudflare Python Worker host: ports over Workers bindings, request/response glue,
and the bodies of the two Durable Objects (the classes live in ``src/durable_objects``).

Only this package and ``src/entry.py`` / ``src/durable_objects`` import ``workers`` or ``js``.
"""
