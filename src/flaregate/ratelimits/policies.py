"""Limit policies as configured: ``FLAREGATE_RATE_LIMITS`` and ``FLAREGATE_BUDGETS``, and
the default token bucket of ``RATE_LIMIT_*``.

Validated when configuration loads, so nonsense (zero limits, unknown algorithms, a user
scope without a header to read it from) stops the gateway with a message naming the field.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    StrictStr,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
HEADER_PATTERN = r"^[A-Za-z0-9-]{1,64}$"
MAX_WINDOW_SECONDS = 366 * 86400
MAX_LIMIT = 1e12
MAX_LEASE = 10_000
ADAPTIVE = ("adaptive", "auto", "")  # how a lease left to the gateway may also be written
DEFAULT_POLICY = "default"
KEY_BUDGET = "key_budget"  # the monthly budget of a stored key's budget_usd (a reserved name)
# A team's budgets (security/teams.py), counted in the team's partition: reserved names too.
TEAM_BUDGETS = {"budget_usd_day": "team_usd_day", "budget_usd_month": "team_usd_month",
                "budget_tokens_day": "team_tokens_day", "budget_tokens_month": "team_tokens_month"}
RESERVED_NAMES = frozenset({KEY_BUDGET, *TEAM_BUDGETS.values()})

# "team": the key's team (its own partition, shared by the team's keys; a key in no team
# counts alone, in its own partition). "mcp_server" and "mcp_tool": an MCP tool call's
# server, or its tool (``server.tool``); a policy with either counts MCP tool calls only.
Scope = Literal["key", "ip", "model", "user", "team", "mcp_server", "mcp_tool"]
MCP_SCOPES = frozenset({"mcp_server", "mcp_tool"})

# A policy's lease (ratelimits/leases.py): unset (or "adaptive") lets the gateway size each
# lease from the isolate's recent rate and what the partition has left; 0 (or 1) asks the
# object on every request; N > 1 is the most requests one lease covers.
Lease = int | None


def _lease_value(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ADAPTIVE:
        return None
    return value


def max_lease(lease: Lease) -> int:
    """Requests' worth a lease may take beyond the request asking: 0 for none."""
    if lease is None:
        return MAX_LEASE
    return max(0, lease - 1)


class TokenBucketPolicy(BaseModel):
    """The default limit (``RATE_LIMIT_CAPACITY``, ``RATE_LIMIT_REFILL_PER_SECOND`` or
    ``RATE_LIMIT_PER_HOUR``, ``RATE_LIMIT_LEASE``); a ``FLAREGATE_RATE_LIMITS`` policy named
    "default" replaces it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Literal["token_bucket"] = "token_bucket"
    capacity: PositiveFloat = 100.0
    refill_per_second: PositiveFloat = 1000 / 3600  # the seed's development limit: 1 000/hour
    lease: Lease = Field(default=None, ge=0, le=MAX_LEASE)  # RATE_LIMIT_LEASE (see ratelimits/leases.py)

    @field_validator("lease", mode="before")
    @classmethod
    def _lease_text(cls, value: Any) -> Any:
        return _lease_value(value)

    @model_validator(mode="after")
    def _lease_fits(self) -> TokenBucketPolicy:
        if self.lease is not None and self.lease > self.capacity:
            raise ValueError(f"lease ({self.lease}) is larger than the capacity ({self.capacity:g})")
        return self

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    # Whose usage is counted: the gateway key, the client's network (IPv4 /24, IPv6 /48),
    # the model asked for, a user id header (always inside the key's namespace), or several.
    scope: tuple[Scope, ...] = ("key",)
    user_header: str | None = Field(default=None, pattern=HEADER_PATTERN)
    # Limiter unreachable: "open" admits against an in-isolate fallback, "closed" refuses.
    failure_mode: Literal["open", "closed"] = "open"
    # Globs over MCP tools' gateway names (``github.*``, ``github.create_issue``): the policy
    # counts only tool calls to those. Unset: every request (chat and tool calls alike),
    # unless an ``mcp_*`` scope makes it a tool-call policy (then every tool).
    mcp_tools: tuple[StrictStr, ...] | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("scope", mode="before")
    @classmethod
    def _scope_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):  # "key+model" as shorthand for ["key", "model"]
            return tuple(part.strip() for part in value.split("+"))
        return value

    @field_validator("scope")
    @classmethod
    def _scope_is_a_set(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("scope needs at least one of key, ip, model, user, team, mcp_server, mcp_tool")
        if len(set(value)) != len(value):
            raise ValueError("scope names an element twice")
        if "team" in value and set(value) - {"team", "model", *MCP_SCOPES}:
            raise ValueError("scope 'team' combines with 'model', 'mcp_server' and 'mcp_tool' only")
        return value

    @model_validator(mode="after")
    def _user_header_matches_scope(self) -> _Policy:
        if "user" in self.scope and not self.user_header:
            raise ValueError(f"policy {self.name!r}: scope 'user' needs user_header (the header holding the user id)")
        if self.user_header and "user" not in self.scope:
            raise ValueError(f"policy {self.name!r}: user_header is set but scope has no 'user'")
        return self

    @property
    def is_budget(self) -> bool:
        return False

    @property
    def tool_calls_only(self) -> bool:
        """Whether the policy counts MCP tool calls only (chat requests pass it by)."""
        return self.mcp_tools is not None or not MCP_SCOPES.isdisjoint(self.scope)

    def counts_tool(self, tool: str) -> bool:
        """Whether a call to the MCP tool ``server.tool`` counts under this policy."""
        return self.mcp_tools is None or any(fnmatch.fnmatchcase(tool, glob) for glob in self.mcp_tools)

    def wire(self) -> dict[str, Any]:
        """The policy as the rate-limiter object takes it (plain values: it crosses RPC)."""
        raise NotImplementedError


class RateLimitPolicy(_Policy):
    algorithm: Literal["token_bucket", "sliding_window", "fixed_window"]
    unit: Literal["requests", "tokens"] = "requests"
    limit: PositiveFloat = Field(le=MAX_LIMIT)  # bucket capacity, or units per window
    window_seconds: PositiveFloat | None = Field(default=None, le=MAX_WINDOW_SECONDS)
    refill_per_second: PositiveFloat | None = None  # token bucket only
    # "named_keys": only for stored keys whose rate_limit_policy names this policy (it then
    # replaces "default" for them); "all": every request.
    applies_to: Literal["all", "named_keys"] = "all"
    # Requests an isolate may take from the object in one call and spend itself (see Lease
    # above and ratelimits/leases.py): unset adaptive, 0 none, N at most N.
    lease: Lease = Field(default=None, ge=0, le=MAX_LEASE)

    @field_validator("lease", mode="before")
    @classmethod
    def _lease_text(cls, value: Any) -> Any:
        return _lease_value(value)

    @model_validator(mode="after")
    def _lease_fits(self) -> RateLimitPolicy:
        if self.lease is not None and self.lease > 1 and self.unit == "requests" and self.lease > self.limit:
            raise ValueError(f"policy {self.name!r}: lease ({self.lease}) is larger than limit ({self.limit:g})")
        return self

    @property
    def leases(self) -> bool:
        return max_lease(self.lease) > 0

    @model_validator(mode="after")
    def _timing_fits_the_algorithm(self) -> RateLimitPolicy:
        if self.algorithm == "token_bucket":
            if (self.refill_per_second is None) == (self.window_seconds is None):
                raise ValueError(f"policy {self.name!r}: a token_bucket needs exactly one of refill_per_second"
                                 " or window_seconds (refill = limit / window_seconds)")
        elif self.window_seconds is None:
            raise ValueError(f"policy {self.name!r}: a {self.algorithm} needs window_seconds")
        elif self.refill_per_second is not None:
            raise ValueError(f"policy {self.name!r}: refill_per_second is only for a token_bucket")
        return self

    def wire(self) -> dict[str, Any]:
        if self.algorithm == "token_bucket":
            refill = self.refill_per_second or self.limit / (self.window_seconds or 1)
            return {"name": self.name, "algorithm": self.algorithm, "unit": self.unit, "limit": self.limit,
                    "refill_per_second": refill}
        return {"name": self.name, "algorithm": self.algorithm, "unit": self.unit, "limit": self.limit,
                "window_seconds": self.window_seconds}


class _PeriodBudget(_Policy):
    """A budget per UTC day or calendar month, whatever it counts: money fails closed (with
    the store away it refuses, 503, rather than spend blind), a lease reserves what the
    requests it covers cost (leases.py), and the limiter sees a fixed window."""

    period: Literal["day", "month"]
    failure_mode: Literal["open", "closed"] = "closed"
    lease: Lease = Field(default=None, ge=0, le=MAX_LEASE)

    @property
    def is_budget(self) -> bool:
        return True

    @property
    def leases(self) -> bool:
        return max_lease(self.lease) > 0

    @property
    def unit(self) -> str:  # what the budget counts: each kind says
        raise NotImplementedError

    @property
    def limit(self) -> float:
        raise NotImplementedError

    def wire(self) -> dict[str, Any]:
        window = {"window_seconds": 86400} if self.period == "day" else {"calendar": "month"}
        return {"name": self.name, "algorithm": "fixed_window", "unit": self.unit, "limit": self.limit, **window}


class BudgetPolicy(_PeriodBudget):
    """Spending per UTC day or calendar month, in USD, priced from the route targets."""

    limit_usd: PositiveFloat = Field(le=MAX_LIMIT)

    @field_validator("lease", mode="before")
    @classmethod
    def _lease_text(cls, value: Any) -> Any:
        return _lease_value(value)

    @property
    def unit(self) -> str:
        return "usd"

    @property
    def limit(self) -> float:
        return self.limit_usd


class TokenBudgetPolicy(_PeriodBudget):
    """Tokens per UTC day or calendar month (a team's ``budget_tokens_*``): a budget, so it
    fails closed and its refusal is ``insufficient_quota``, counted like a token rate limit."""

    limit_tokens: PositiveFloat = Field(le=MAX_LIMIT)

    @property
    def unit(self) -> str:
        return "tokens"

    @property
    def limit(self) -> float:
        return self.limit_tokens


LimitPolicy = RateLimitPolicy | BudgetPolicy | TokenBudgetPolicy


def check_unique_names(rate_limits: tuple[RateLimitPolicy, ...], budgets: tuple[BudgetPolicy, ...]) -> None:
    names = [p.name for p in rate_limits] + [b.name for b in budgets]
    for reserved in sorted(RESERVED_NAMES & set(names)):
        raise ValueError(f"the policy name {reserved!r} is reserved for stored keys' and teams' budgets")
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"limit policy names must be unique: {name!r} is used twice")
