"""Scoped admin credentials beside the full admin key (``FLAREGATE_ADMIN_KEY``):

- ``team_admin`` of one team: manages that team's keys (create, change, rotate, revoke, list)
  and reads that team and its spend (``/admin/teams/{id}``, ``/admin/teams/{id}/usage``);
  anything of another team, or outside keys and its team, is a 403;
- ``read_only``: every ``GET`` of the admin API (keys, teams, webhooks without secrets,
  usage, the audit log); no change (403).

Made by the full admin (``POST /admin/credentials``), shown in plain once, stored as a
SHA-256 digest like gateway keys. A credential is ``fgc-`` and 43 URL-safe characters; its id
(``cred_`` + 16 hex digits of its digest) is derived from it, so the audit log can name the
caller without a lookup. Presented as the admin key is (``Authorization: Bearer``), and a
signed request (``SIGNED_ROUTES``) is signed with the credential itself as the HMAC secret,
since a team admin is never given the gateway's signing secret. Endpoints outside the admin
API proper (cache, rate-limit resets, warming) stay full-admin only: a scoped credential
there is a 403 (``security/admin.py``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import GatewayError
from ..http import Request
from ..ports import SecurityStoreClient
from .admin import SCOPED_PREFIX, is_admin, presented_admin_key, refused_admin, require_admin

if TYPE_CHECKING:
    from ..config import Settings

CREDENTIAL_PREFIX = SCOPED_PREFIX
CREDENTIAL_SHAPE = re.compile(r"fgc-[A-Za-z0-9_-]{43}")
Role = Literal["admin", "team_admin", "read_only"]
ROLES = ("team_admin", "read_only")


def credential_id(token: str) -> str:
    return "cred_" + hashlib.sha256(token.encode()).hexdigest()[:16]


def new_credential() -> tuple[str, str, str]:
    """A fresh scoped credential: (plain, id, digest)."""
    plain = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
    digest = hashlib.sha256(plain.encode()).hexdigest()
    return plain, "cred_" + digest[:16], digest


def scoped_token(request: Request) -> str | None:
    """The presented admin token when it is shaped like a scoped credential."""
    token = presented_admin_key(request)
    return token if token is not None and CREDENTIAL_SHAPE.fullmatch(token) else None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling the admin API: the full admin, or a scoped credential."""

    credential: str  # "admin" or a credential id
    role: Role
    team_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def require_admin(self) -> None:
        if self.role != "admin":
            raise _forbidden("This needs the full admin key; a scoped credential cannot do it.")

    def require_write(self) -> None:
        if self.role == "read_only":
            raise _forbidden("This credential is read-only.")

    def require_team(self, team_id: str | None) -> None:
        """A team admin may touch its own team only (a key in no team is no team's)."""
        if self.role == "team_admin" and team_id != self.team_id:
            raise _forbidden(f"This credential manages team {self.team_id} only.")

    def sees_team(self, team_id: str | None) -> bool:
        return self.role != "team_admin" or team_id == self.team_id


ADMIN = Caller("admin", "admin")


def _forbidden(message: str) -> GatewayError:
    return GatewayError(403, message, type="permission_error", code="admin_scope_forbidden")


async def identify(request: Request, settings: Settings, store: SecurityStoreClient | None) -> Caller:
    """The caller of an admin request, or the 401/403/429 of ``require_admin``."""
    if is_admin(request, settings):
        return ADMIN
    token = scoped_token(request)
    if token is None or store is None or settings.admin_key is None:
        require_admin(request, settings)  # raises: no admin key, a wrong one, or a throttled network
        raise AssertionError("require_admin let a non-admin through")  # pragma: no cover
    record = await store.call("credentials.find", {"digest": hashlib.sha256(token.encode()).hexdigest()})
    if record is None or record.get("revoked_at") is not None:
        raise refused_admin(request, settings)
    return Caller(record["id"], record["role"], record.get("team_id"))
