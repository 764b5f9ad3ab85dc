"""Who sees what of ``GET /v1/providers``: recent upstream error texts may carry another
tenant's data (a provider echoing a prompt, an id, a key), so only the admin key sees
them; a gateway key sees the health of the routes its policy allows (``allowed_models``),
each error reduced to its time, kind and status (``UpstreamCaller.report``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..http import Request
from .access import AccessControl
from .admin import is_admin

if TYPE_CHECKING:
    from ..config import Settings


async def provider_view(request: Request, settings: Settings,
                        access: AccessControl) -> tuple[bool, Callable[[str], bool] | None]:
    """``(detail, allows)`` for ``UpstreamCaller.report``: the admin key (headers only, as
    for ``/admin/``) gets every route with the error texts; a gateway key its routes only,
    without them; anyone else the 401/403 of :meth:`AccessControl.authenticate`."""
    if is_admin(request, settings):
        return True, None
    principal = await access.authenticate(request)
    return False, (None if principal.policy.allowed_models is None else principal.allows_model)
