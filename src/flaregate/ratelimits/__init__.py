"""Rate limits and spending budgets as the gateway applies them to a request.

``policies`` (configuration), ``scope`` (whose limit a request counts against),
``estimate`` (tokens and cost before and after the upstream call), ``headers`` (what the
client is told), ``enforcer`` (reserve, settle, degrade) and ``admin`` (read and reset).
The arithmetic and the state live in ``flaregate.objects`` (the rate-limiter object).
"""
