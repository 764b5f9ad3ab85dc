"""Rate limits and spending budgets: policies, scope, estimates, headers, the enforcer, the
admin endpoints, and the limiter object (one per partition) with its algorithms."""
