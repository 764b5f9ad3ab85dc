"""The audit log of admin changes: every non-GET request to an ``admin`` route (the admin
API, rate-limit resets, cache purges and warming), with which credential made it (the full
admin key, a scoped credential's id, or ``unknown`` for one that failed to authenticate),
what (method, path: ids are in the path, bodies are not kept, they may hold secrets), its
status and when. Kept as long as the error logs (``LOG_RETENTION_ERROR_SECONDS``), in the
security store; written in the background, after the answer; read at ``GET /admin/audit``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..http import Request
from ..ports import BackgroundTasks, SecurityStoreClient
from .admin import is_admin, is_observer
from .admin_scopes import credential_id, scoped_token

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("flaregate.admin")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def caller_label(request: Request, settings: Settings) -> str:
    """Who made an admin request, from what it presented (no lookup)."""
    if is_admin(request, settings):
        return "admin"
    token = scoped_token(request)
    if token is not None:
        return credential_id(token)
    return "observer" if is_observer(request, settings, browser=False) else "unknown"


class AdminAudit:
    def __init__(self, settings: Settings, store: SecurityStoreClient | None, tasks: BackgroundTasks,
                 keep_seconds: float) -> None:
        self._settings = settings
        self._store = store
        self._tasks = tasks
        self._keep_seconds = keep_seconds

    def record(self, request: Request, status: int) -> None:
        if self._store is None or request.method in READ_METHODS:
            return
        self._tasks.run(self._write(caller_label(request, self._settings), request.method,
                                    request.path[:512], status))

    async def _write(self, credential: str, method: str, path: str, status: int) -> None:
        assert self._store is not None
        try:
            await self._store.call("audit.log", {"credential": credential, "method": method, "path": path,
                                                 "status": status, "keep_seconds": self._keep_seconds})
        except Exception:
            log.warning("could not write the audit record of %s %s", method, path, exc_info=True)
