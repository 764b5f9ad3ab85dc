"""Limits as the gateway applies them: reserve before the upstream call, settle after it.

For each request every policy gives one check (partition, row, cost). The checks of one
partition go to its rate-limiter object in one call, all or nothing; when a request spans
several partitions (say a per-key and a per-network policy) and one refuses, what the others
admitted is given back. Token and money checks reserve an estimate; ``Admission.settle``
charges the difference to the real usage, or refunds it all when the call failed.

Leases (``leases.py``, on unless a policy says ``lease: 0``): a partition whose policies all
lease is asked for more than this request's units when the isolate is busy, and later
requests spend what it lent without a call; their settlements stay in the isolate too.

When an object cannot be reached (error or ``LIMITER_TIMEOUT_SECONDS``), each policy's
``failure_mode`` decides: ``open`` admits against an in-isolate fallback limiter with the
same policy (limits then hold per isolate rather than globally), ``closed`` refuses with
503. Either way the metrics hub gets a ``ratelimit_degraded`` event (at most one per
``REPORT_EVERY_SECONDS``, with a count) and the log one line.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..accounting import PriceTable, Usage, estimate_tokens
from ..errors import GatewayError
from ..http import Request
from ..observability.alerts import Alerts
from ..observability.analytics import Analytics
from ..ports import Clock, RateLimiterClient
from ..request_event import RequestEvent
from ..security.access import Principal
from .headers import ietf_headers, openai_headers, retry_after
from .leases import Lease, LeaseBook, with_left
from .limiter import MAX_CHECKS, RateLimiter
from .policies import (
    DEFAULT_POLICY,
    KEY_BUDGET,
    TEAM_BUDGETS,
    BudgetPolicy,
    LimitPolicy,
    RateLimitPolicy,
    TokenBudgetPolicy,
    max_lease,
)
from .scope import address, key_partition, team_partition
from .thresholds import BudgetThresholds

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("flaregate.ratelimits")

LIMITER_TIMEOUT_SECONDS = 2.0
REPORT_EVERY_SECONDS = 10.0
DEGRADED_EVENT = "ratelimit_degraded"
_T = TypeVar("_T")


def effective_policies(settings: Settings) -> list[LimitPolicy]:
    """The simple ``RATE_LIMIT_*`` policy named ``default`` (unless ``FLAREGATE_RATE_LIMITS``
    defines its own ``default``), then the configured rate limits, then the budgets.
    (Policies with ``applies_to: named_keys`` apply only to keys that name them.)"""
    policies: list[LimitPolicy] = []
    if not any(p.name == DEFAULT_POLICY for p in settings.rate_limits):
        simple = settings.rate_limit
        policies.append(RateLimitPolicy(name=DEFAULT_POLICY, algorithm="token_bucket", limit=simple.capacity,
                                        refill_per_second=simple.refill_per_second, lease=simple.lease))
    return [*policies, *settings.rate_limits, *settings.budgets]


async def _all(jobs: Sequence[Awaitable[_T]]) -> list[_T]:
    """``asyncio.gather``, except that one job (the usual case: one partition) is awaited
    as it is: gather wraps each job in a Task, and under Pyodide every Task step is a trip
    through the JavaScript event loop."""
    if len(jobs) == 1:
        return [await jobs[0]]
    return list(await asyncio.gather(*jobs))


@dataclass(slots=True)
class _Check:
    policy: LimitPolicy
    wire: dict[str, Any]
    partition: str
    row: str
    cost: float

    @property
    def unit(self) -> str:
        return self.wire["unit"]

    @property
    def most(self) -> int:
        """Requests' worth a lease of this policy may take beyond this request: 0 for none."""
        return max_lease(self.policy.lease)

    def entry(self, amount: str = "cost", value: float | None = None) -> dict[str, Any]:
        return {"key": self.row, "policy": self.wire, amount: self.cost if value is None else value}


@dataclass(slots=True)
class _Outcome:
    """One partition's answer: the object's, the fallback's, or none (unreachable, fail closed)."""

    partition: str
    checks: list[_Check]
    answer: dict[str, Any] | None
    degraded: bool = False
    leases: list[Lease] | None = None  # per check, the lease it spent from (or was lent with)


_RESULT_FIELDS = frozenset({"key", "unit", "allowed", "limit", "remaining", "used", "reset_seconds",
                            "retry_after_seconds", "window_seconds"})


def _valid_answer(answer: Any, count: int) -> bool:
    results = answer.get("results") if isinstance(answer, Mapping) else None
    return (isinstance(results, list) and len(results) == count and "allowed" in answer
            and all(isinstance(r, Mapping) and _RESULT_FIELDS <= r.keys() for r in results))


class Admission:
    """What one admitted request reserved; settled exactly once."""

    def __init__(self, limits: Limits, model: str, outcomes: list[_Outcome], out: dict[str, str]) -> None:
        self._limits = limits
        self._model = model
        self._outcomes = outcomes
        self._out = out
        self._settled = False

    @property
    def needs_usage(self) -> bool:
        """Whether settling depends on the real usage (token or money policies apply)."""
        return any(c.unit != "requests" for o in self._outcomes for c in o.checks)

    def keep(self) -> None:
        """Let the reservations stand (the usage is unknown, e.g. a stream without usage)."""
        self._settled = True

    async def refund(self) -> dict[str, str]:
        """The call failed or never went upstream: give back the reserved tokens and money."""
        return await self._finish(0, 0.0)

    async def settle(self, usage: Usage | None, provider: str, upstream_model: str) -> dict[str, str]:
        """Charge the real ``usage`` of the target that answered instead of the estimate.

        Without usage (the provider sent none) the estimate stands.
        """
        if usage is None:
            self.keep()
            return {}
        return await self._finish(usage.total, self._limits.prices.cost(self._model, provider, upstream_model, usage))

    async def settle_later(self, usage: Usage | None, provider: str, upstream_model: str) -> None:
        """As background work (a stream's usage arrives after its response): ``settle``
        with the usage, or ``refund`` without one."""
        if usage is None:
            await self.refund()
        else:
            await self.settle(usage, provider, upstream_model)

    async def _finish(self, tokens: int, cost: float) -> dict[str, str]:
        """Returns the token headers as they stand afterwards (also updated in place in the
        response headers given to ``admit``). Never raises: the answer is already won."""
        if self._settled or not self.needs_usage:
            return {}
        self._settled = True
        try:
            return await self._reconcile_all({"tokens": tokens, "usd": cost})
        except Exception:
            log.warning("could not settle rate-limit reservations", exc_info=True)
            return {}

    async def _reconcile_all(self, real: dict[str, float]) -> dict[str, str]:
        token_results: dict[str, dict[str, Any]] = {}
        jobs = []
        for outcome in self._outcomes:
            assert outcome.answer is not None
            for check, result in zip(outcome.checks, outcome.answer["results"], strict=True):
                if check.unit == "tokens":
                    token_results[check.row] = result
            changes = [(c, real[c.unit] - c.cost) for c in outcome.checks if c.unit != "requests"]
            changes = [(c, delta) for c, delta in changes if abs(delta) > 1e-12]
            if changes:
                jobs.append(self._limits._reconcile(outcome, changes))
        for answer in await _all(jobs):
            for result in (answer or {}).get("results", []):
                if result.get("unit") == "tokens":
                    token_results[result["key"]] = result
        headers = openai_headers(token_results.values())
        self._out.update(headers)
        return headers


class Limits:
    def __init__(self, settings: Settings, client: RateLimiterClient, clock: Clock, analytics: Analytics,
                 alerts: Alerts | None = None, thresholds: BudgetThresholds | None = None) -> None:
        self.policies = effective_policies(settings)
        self.prices = PriceTable(settings.routes)
        self._client = client
        self._clock = clock
        self._analytics = analytics
        self._alerts = alerts
        self._thresholds = thresholds if thresholds is not None and thresholds.enabled else None
        self._fallback = RateLimiter.in_memory(clock)
        self._leases = LeaseBook(clock)
        self._for_all = [p for p in self.policies if getattr(p, "applies_to", "all") == "all"]
        # A chat request's policies: the tool-call ones (mcp_tools, an mcp_* scope) left out once.
        self._for_chat = [p for p in self._for_all if not p.tool_calls_only]
        self._by_name = {p.name: p for p in self.policies if not p.is_budget}
        self._key_budgets: dict[float, BudgetPolicy] = {}
        self._team_budgets: dict[tuple[str, float], LimitPolicy] = {}
        self._warned: set[str] = set()
        self._estimates = self.prices.priced or any(getattr(p, "unit", "requests") != "requests"
                                                    for p in self.policies)
        self._last_report = -math.inf
        self._unreported = 0

    def policies_for(self, principal: Principal, tool: str | None = None) -> list[LimitPolicy]:
        """The policies a key is held to: every ``applies_to: all`` policy; the rate-limit
        policy its team names replaces ``default``, and so does the key's own (a key naming one
        inside a team that names another is held to both: a key narrows its team, never
        widens it); its ``budget_usd`` adds a budget per calendar month named ``KEY_BUDGET``,
        and its team's budgets (``TEAM_BUDGETS``) are counted in the team's partition. For an
        MCP tool call (``tool``: its ``server.tool``) the tool-call policies counting that tool
        join in; a chat request passes them by (a named one then leaves ``default`` be)."""
        policies = self._for_chat if tool is None else [p for p in self._for_all if p.counts_tool(tool)]
        team = principal.team
        for name in (team.rate_limit_policy if team is not None else None, principal.policy.rate_limit_policy):
            named = self._by_name.get(name or "")
            if named is not None:
                if named.counts_tool(tool) if tool is not None else not named.tool_calls_only:
                    policies = [p for p in policies if p.name not in (DEFAULT_POLICY, named.name)] + [named]
            elif name and principal.key_id not in self._warned:
                self._warned.add(principal.key_id)  # once per key and process, not per request
                log.warning("key %s names unknown rate-limit policy %r; the default applies",
                            principal.key_id, name[:64])
        budget = principal.policy.budget_usd
        if budget is not None:
            if budget not in self._key_budgets:
                if len(self._key_budgets) > 1000:
                    self._key_budgets.clear()
                # A budget of 0 allows no spending: a limit too small for any priced request.
                self._key_budgets[budget] = BudgetPolicy(name=KEY_BUDGET, period="month",
                                                         limit_usd=max(budget, 1e-9))
            policies = [*policies, self._key_budgets[budget]]
        if team is not None:
            team_budgets = [self._team_budget(field, limit) for field in TEAM_BUDGETS
                            if (limit := getattr(team, field)) is not None]
            # The team's first (the key's are given back when the team's refuse, and the other way round).
            policies = [*team_budgets, *policies] if team_budgets else policies
        return policies

    def _team_budget(self, field: str, limit: float) -> LimitPolicy:
        """The policy of one of a team's budgets (shared by every team with the same limit)."""
        found = self._team_budgets.get((field, limit))
        if found is None:
            if len(self._team_budgets) > 1000:
                self._team_budgets.clear()
            name = TEAM_BUDGETS[field]
            period: Literal["day", "month"] = "day" if field.endswith("_day") else "month"
            # A budget of 0 allows nothing: a limit too small for any request.
            found = (BudgetPolicy(name=name, period=period, limit_usd=max(limit, 1e-9), scope=("team",))
                     if "_usd_" in field else
                     TokenBudgetPolicy(name=name, period=period, limit_tokens=max(limit, 1e-9), scope=("team",)))
            self._team_budgets[(field, limit)] = found
        return found

    # -- admission -----------------------------------------------------------------------
    async def admit(self, request: Request, principal: Principal, model: str, body: Mapping[str, Any],
                    out: dict[str, str], event: RequestEvent, call_price: float | None = None,
                    tool: str | None = None) -> Admission:
        """Reserve this request's units under every policy, or raise 429 (or 503).
        ``call_price`` set: a call of that fixed price and no tokens (an MCP tool call,
        ``model`` its ``mcp:server.tool``, ``tool`` its ``server.tool``), not an estimate
        from the body."""
        key_id = principal.key_id
        policies = self.policies_for(principal, tool)
        if call_price is not None:
            estimate, price = Usage(0, 0), call_price
        else:
            # A team's budgets need the estimate even where the gateway's own policies do not.
            estimates = self._estimates or principal.team is not None
            estimate = estimate_tokens(body) if estimates else Usage(0, 0)
            price = self.prices.estimate(model, estimate) if estimates else 0.0
        groups: dict[str, list[_Check]] = {}
        for policy in policies:
            if isinstance(policy, BudgetPolicy) and price <= 0:
                continue  # money budgets count money: an unpriced route is outside them
            partition, row = address(policy, key_id, request.client_ip, model, request.headers,
                                     principal.team_id, tool)
            wire = policy.wire()
            cost = {"requests": 1.0, "tokens": float(estimate.total), "usd": price}[wire["unit"]]
            groups.setdefault(partition, []).append(_Check(policy, wire, partition, row, cost))
        outcomes = await _all([self._acquire(p, checks) for p, checks in groups.items()])
        unreachable = [o for o in outcomes if o.answer is None]
        refused = [o for o in outcomes if o.answer is not None and not o.answer["allowed"]]
        returned: dict[tuple[str, str], dict[str, Any]] = {}
        if unreachable or refused:
            returned = await self._give_back([o for o in outcomes if o.answer is not None and o.answer["allowed"]])
        results = [returned.get((o.partition, c.row), r) for o in outcomes if o.answer
                   for c, r in zip(o.checks, o.answer["results"], strict=True)]
        out.update(openai_headers(results))
        out.update(ietf_headers(results))
        if unreachable:
            names = sorted({c.policy.name for o in unreachable for c in o.checks if c.policy.failure_mode == "closed"})
            raise GatewayError(503, f"The rate limiter is unavailable and policy {', '.join(map(repr, names))} fails"
                               " closed; retry shortly.", type="api_error", code="rate_limiter_unavailable",
                               headers={**out, "retry-after": "1"})
        if refused:
            event["rate_limited"] = True
            raise self._refusal(key_id, refused, out)
        if self._thresholds is not None:
            for outcome in outcomes:
                assert outcome.answer is not None
                for check, result in zip(outcome.checks, outcome.answer["results"], strict=True):
                    if check.policy.is_budget:
                        self._thresholds.observe(outcome.partition, check.wire, result)
        return Admission(self, model, list(outcomes), out)

    def _refusal(self, key_id: str, refused: list[_Outcome], out: dict[str, str]) -> GatewayError:
        pairs = [(c, r) for o in refused for c, r in zip(o.checks, o.answer["results"], strict=True)  # type: ignore[index]
                 if not r["allowed"]]
        wait = retry_after(r for _, r in pairs)
        headers = {**out, "retry-after": str(wait)}
        budgets = [(c, r) for c, r in pairs if c.policy.is_budget]
        if budgets:
            check, result = budgets[0]
            period = getattr(check.policy, "period", "period")
            # Waiting seconds will not help: tell the OpenAI SDKs not to retry.
            headers["x-should-retry"] = "false"
            if self._alerts is not None:
                self._alerts.budget_exceeded(key_id, check.policy.name, result["limit"], period)
            unit = "USD" if check.unit == "usd" else "tokens"
            if result.get("exceeds_limit"):
                return GatewayError(429, f"This request may cost up to {check.cost:g} {unit}, more than budget "
                                    f"'{check.policy.name}' allows ({result['limit']} {unit} per {period}).",
                                    type="insufficient_quota", code="budget_exceeded", headers=headers)
            return GatewayError(429, f"Budget '{check.policy.name}' exceeded: {result['used']} of "
                                f"{result['limit']} {unit} spent this {period}; it resets in {wait}s.",
                                type="insufficient_quota", code="budget_exceeded", headers=headers)
        check, result = max(pairs, key=lambda pair: pair[1]["retry_after_seconds"])
        unit = check.unit
        if self._alerts is not None:
            self._alerts.rate_limited(key_id, result["limit"])
        if result.get("exceeds_limit"):
            message = (f"This request may use up to {math.ceil(check.cost)} {unit}, more than policy "
                       f"'{check.policy.name}' allows ({result['limit']} {unit}); lower max_tokens or shorten it.")
        else:
            message = (f"Rate limit reached for policy '{check.policy.name}': {result['limit']} {unit}; "
                       f"retry in {wait}s.")
        return GatewayError(429, message, type="rate_limit_error", code="rate_limit_exceeded", headers=headers)

    async def _acquire(self, partition: str, checks: list[_Check]) -> _Outcome:
        leasing = all(c.most for c in checks)
        recent = self._leases.seen(partition) if leasing else 0.0
        if leasing:
            if (spent := self._spend(partition, checks)) is not None:
                return spent
            if (refusal := self._leases.refusal(partition, [(c.row, c.cost) for c in checks])) is not None:
                return _Outcome(partition, checks, refusal)
        entries = [c.entry() for c in checks]
        try:
            if leasing:
                return await self._lease(partition, checks, entries, recent)
            return _Outcome(partition, checks, await self._ask(partition, entries))
        except Exception as exc:
            closed = any(c.policy.failure_mode == "closed" for c in checks)
            self._report_degraded(checks, exc, "closed" if closed else "open")
            if closed:
                return _Outcome(partition, checks, None, degraded=True)
            return _Outcome(partition, checks, self._fallback.partition(partition).acquire(entries), degraded=True)

    async def _ask(self, partition: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        answer = await asyncio.wait_for(self._client.acquire(partition, entries), LIMITER_TIMEOUT_SECONDS)
        if not _valid_answer(answer, len(entries)):
            raise ValueError("malformed answer from the rate limiter")
        return answer

    async def _lease(self, partition: str, checks: list[_Check], entries: list[dict[str, Any]],
                     recent: float) -> _Outcome:
        """Ask for this request's units and, when this isolate has been busy, a lease of
        more; bring back what ended leases did not spend. Keep what the object lends."""
        want = self._leases.want(partition, recent, min(c.most for c in checks))
        backs = self._leases.give_backs(partition, [c.row for c in checks] if want else [],
                                        MAX_CHECKS - len(entries))
        sent = self._clock.monotonic()
        if want:
            entries = [{**e, "lease": want} for e in entries]
            self._leases.asking(partition, True)
        try:
            answer = await self._ask(partition, entries + backs)
        finally:
            if want:
                self._leases.asking(partition, False)
        answer = {**answer, "results": answer["results"][:len(checks)]}
        if not answer["allowed"]:
            outcome = self._or_spend(partition, checks, answer)
            if outcome.leases is None:
                costed = [{**r, "cost": c.cost, "algorithm": c.wire["algorithm"]}
                          for c, r in zip(checks, answer["results"], strict=True)]
                self._leases.refused(partition, tuple(c.row for c in checks), {**answer, "results": costed})
            return outcome
        if not answer.get("lease"):
            return _Outcome(partition, checks, answer)
        results = answer["results"]
        seconds = min(float(r.get("lease_seconds") or math.inf) for r in results)
        leases = [self._leases.grant(partition, c.row, c.wire, float(r.get("leased") or 0.0), seconds, answer["at"],
                                     r, sent) for c, r in zip(checks, results, strict=True)]
        return _Outcome(partition, checks, {**answer, "results": [lease.view() for lease in leases]}, leases=leases)

    def _or_spend(self, partition: str, checks: list[_Check], answer: dict[str, Any]) -> _Outcome:
        """The object's answer, unless it refused and a lease has come back meanwhile."""
        if not answer["allowed"] and (spent := self._spend(partition, checks)) is not None:
            return spent
        return _Outcome(partition, checks, answer)

    def _spend(self, partition: str, checks: list[_Check]) -> _Outcome | None:
        leases = self._leases.spend(partition, [(c.row, c.cost) for c in checks])
        if leases is None:
            return None
        answer = {"allowed": True, "at": max(lease.at for lease in leases), "results": [lease.view() for lease in leases]}
        return _Outcome(partition, checks, answer, leases=leases)

    async def _give_back(self, admitted: list[_Outcome]) -> dict[tuple[str, str], dict[str, Any]]:
        """Return what partitions admitted for a request another partition refused.
        Returns the rows' state afterwards, by (partition, row)."""
        answers = await _all([self._reconcile(o, [(c, -c.cost) for c in o.checks if c.cost]) for o in admitted])
        return {(o.partition, r["key"]): r for o, a in zip(admitted, answers, strict=True)
                for r in (a or {}).get("results", [])}

    async def _reconcile(self, outcome: _Outcome, changes: list[tuple[_Check, float]]) -> dict[str, Any] | None:
        if not changes:
            return None
        assert outcome.answer is not None
        if outcome.leases is not None:
            return await self._settle_leased(outcome, outcome.leases, changes)
        at = outcome.answer.get("at")
        entries = [{**c.entry("delta", delta), "at": at} for c, delta in changes]
        return await self._remote_reconcile(outcome, entries)

    async def _settle_leased(self, outcome: _Outcome, leases: list[Lease],
                             changes: list[tuple[_Check, float]]) -> dict[str, Any]:
        """Settle in the leases the request's units came from: a refund goes into its lease
        (or back with the partition's next call once that lease has ended), a charge comes
        out of it, and what the lease cannot cover goes to the object now."""
        lease_of = {id(c): lease for c, lease in zip(outcome.checks, leases, strict=True)}
        remote, rows = [], []
        for check, delta in changes:
            lease = lease_of[id(check)]
            if delta < 0:
                self._leases.refund(outcome.partition, lease, -delta)
            elif (rest := self._leases.charge(lease, delta)) > 1e-12:
                remote.append((lease, {**check.entry("delta", rest), "at": lease.at}))
            rows.append(lease)
        answered: dict[str, dict[str, Any]] = {}
        if remote:
            reply = await self._remote_reconcile(outcome, [entry for _, entry in remote])
            answered = {r["key"]: r for r in (reply or {}).get("results", [])}
        return {"results": [with_left(answered[lease.row], lease.left) if lease.row in answered else lease.view()
                            for lease in rows]}

    async def _remote_reconcile(self, outcome: _Outcome, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
        try:
            if outcome.degraded:
                return self._fallback.partition(outcome.partition).reconcile(entries)
            return await asyncio.wait_for(self._client.reconcile(outcome.partition, entries), LIMITER_TIMEOUT_SECONDS)
        except Exception:
            log.warning("could not reconcile rate-limit reservations in %s", outcome.partition.split(":")[0],
                        exc_info=True)
            return None

    def _report_degraded(self, checks: list[_Check], exc: Exception, mode: str) -> None:
        self._unreported += 1
        now = self._clock.monotonic()
        if now - self._last_report < REPORT_EVERY_SECONDS:
            return
        self._last_report = now
        count, self._unreported = self._unreported, 0
        policies = sorted({c.policy.name for c in checks})
        log.error("rate limiter unreachable (%s); failing %s for %s (%d checks since the last report)",
                  type(exc).__name__, mode, ", ".join(policies), count)
        self._analytics.record({"type": DEGRADED_EVENT, "ts": self._clock.now(), "mode": f"fail_{mode}",
                                "policies": policies, "error": type(exc).__name__, "count": count})

    # -- admin ---------------------------------------------------------------------------
    async def usage(self, key_id: str) -> dict[str, Any]:
        """The object's view of a key's partition; units lent to leases count as used until
        they come back, so this isolate gives back its own first."""
        return await self._usage_of(key_partition(key_id))

    async def team_usage(self, team_id: str) -> dict[str, Any]:
        """The object's view of a team's partition (its budgets' rows), as :meth:`usage`."""
        return await self._usage_of(team_partition(team_id))

    async def _usage_of(self, partition: str) -> dict[str, Any]:
        backs = self._leases.close_all(partition)
        if backs:
            try:
                await asyncio.wait_for(self._client.acquire(partition, backs), LIMITER_TIMEOUT_SECONDS)
            except Exception:
                log.warning("could not give back leased units in %s", partition.split(":")[0], exc_info=True)
        return await asyncio.wait_for(self._client.usage(partition), LIMITER_TIMEOUT_SECONDS)

    async def reset(self, key_id: str, policy: str = "") -> dict[str, Any]:
        partition = key_partition(key_id)
        self._fallback.partition(partition).reset(policy)
        self._leases.forget(partition)  # this isolate's; others' leases end within LEASE_SECONDS
        return await asyncio.wait_for(self._client.reset(partition, policy), LIMITER_TIMEOUT_SECONDS)
