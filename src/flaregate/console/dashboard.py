"""The live dashboard: real files in ``console/static/`` (the page, its stylesheet and four
scripts; no build step, nothing loaded from elsewhere), one copy that both hosts serve from
the package: the wheel carries them as package data, the Worker's bundle as Text modules
(wrangler.toml's ``[[rules]]``), which workerd mounts next to the Python modules.

The page is fed by the ``/ws`` hub. The admin key comes from the URL fragment
(``/dashboard#token=KEY``, never sent to the server) or a form; the page keeps it in
sessionStorage, removes it from the address bar and offers it as the WebSocket subprotocol
``bearer.KEY`` next to ``flaregate.v1``. Read once per process (isolate), on first use.
"""

from __future__ import annotations

import functools
from importlib import resources

PAGE = "dashboard.html"
# The files the page loads from /dashboard/<name>, with their content types: nothing else is served.
ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
    "requests.js": "text/javascript; charset=utf-8",
    "history.js": "text/javascript; charset=utf-8",
    "teams.js": "text/javascript; charset=utf-8",
}


@functools.cache
def read(name: str) -> bytes:
    """The bytes of one of the page's files (``PAGE`` or a key of ``ASSETS``)."""
    if name != PAGE and name not in ASSETS:
        raise KeyError(name)
    return resources.files(__package__).joinpath("static", name).read_bytes()
