"""Rate limits and spending budgets: policies, scope, estimates, headers, the enforcer, the
admin endpoints, and the limiter object (one per partition) with its algorithms."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .admin import RateLimitAdmin
    from .enforcer import Admission, Limits
    from .estimate import PriceTable
    from .limiter import RateLimiter
    from .policies import BudgetPolicy, RateLimitPolicy

_EXPORTS = {
    "RateLimiter": "limiter",
    "Limits": "enforcer",
    "Admission": "enforcer",
    "RateLimitPolicy": "policies",
    "BudgetPolicy": "policies",
    "RateLimitAdmin": "admin",
    "PriceTable": "estimate",
}
__all__ = ["RateLimiter", "Limits", "Admission", "RateLimitPolicy", "BudgetPolicy", "RateLimitAdmin", "PriceTable"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
