"""The Files and Batches routes as data: each path, its methods and the name of the handler
that answers it. The gateway declares them from this table at start-up without importing the
APIs themselves (``deferred.py``): their modules and pydantic models load on the first
request to one of them, so a Worker whose clients never batch does not pay for them."""

from __future__ import annotations

from collections.abc import Callable

from ..routes import Handler, Route

FILES_PATH = "/v1/files"
BATCHES_PATH = "/v1/batches"

# (path, {method: handler name}, summary); ``Batches.handlers`` holds a handler per name.
ROUTES: tuple[tuple[str, dict[str, str], str], ...] = (
    (FILES_PATH, {"POST": "files.upload", "GET": "files.list"},
     "Upload a file (multipart, streamed), or list this key's files"),
    (FILES_PATH + "/{file_id}", {"GET": "files.retrieve", "DELETE": "files.delete"},
     "One of this key's files, or delete it"),
    (FILES_PATH + "/{file_id}/content", {"GET": "files.content"}, "A file's bytes (streamed)"),
    (BATCHES_PATH, {"POST": "batches.create", "GET": "batches.list"},
     "Create a batch from an uploaded JSONL file, or list this key's batches"),
    (BATCHES_PATH + "/{batch_id}", {"GET": "batches.retrieve"}, "One of this key's batches"),
    (BATCHES_PATH + "/{batch_id}/cancel", {"POST": "batches.cancel"}, "Cancel a batch"),
)


def routes(handler: Callable[[str], Handler]) -> list[Route]:
    """The routes, each method answered by ``handler(name)``."""
    return [Route(path, {method: handler(name) for method, name in methods.items()}, "key", summary)
            for path, methods, summary in ROUTES]
