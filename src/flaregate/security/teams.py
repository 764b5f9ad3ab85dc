"""Teams: keys grouped under one record that bounds them all (permissions, default tags,
a rate-limit policy, budgets per day and month in USD and in tokens).

A key belongs to at most one team (``team_id`` in its policy) and inherits from it; what the
key sets can only narrow what the team allows:

- permissions (``permissions.py``): a name must pass both the key's and the team's lists
  (``all_allow``); a key leaving a list unset has the team's; a key list naming something
  outside its team's is refused when the key is written (400 naming the field), so a stored
  key never claims more than it can use;
- budgets: the team's and the key's are both reserved (``ratelimits/enforcer.py``); a key's
  ``budget_usd`` (monthly) may be at most the team's monthly USD budget;
- tags: a tag the team sets wins; the key's tags fill only the names the team leaves unset
  (the team is the operator's accounting unit: a key cannot relabel its team's spend);
- rate-limit policy: the team's names the policy its keys get in place of ``default``; a key
  that names its own is held to both.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from pydantic import ConfigDict, Field, StrictStr

from ..metadata.tags import PolicyTags
from .permissions import Permissions

TEAM_ID = re.compile(r"[A-Za-z0-9_]{1,64}")
BUDGET_FIELDS = ("budget_usd_day", "budget_usd_month", "budget_tokens_day", "budget_tokens_month")
PERMISSION_FIELDS = tuple(Permissions.model_fields)


class TeamPolicy(Permissions):
    """What a team allows its keys, and what it spends; ``None`` means unrestricted."""

    model_config = ConfigDict(extra="forbid")

    tags: PolicyTags = None  # default request tags, winning over the key's
    rate_limit_policy: StrictStr | None = Field(default=None, max_length=64)
    budget_usd_day: float | None = Field(default=None, ge=0, le=1e12)
    budget_usd_month: float | None = Field(default=None, ge=0, le=1e12)
    budget_tokens_day: int | None = Field(default=None, ge=0, le=10**15)
    budget_tokens_month: int | None = Field(default=None, ge=0, le=10**15)


class Team(TeamPolicy):
    """A stored team: its id and name, and its policy."""

    id: StrictStr = Field(pattern=TEAM_ID.pattern)
    name: StrictStr = Field(default="", max_length=100)
    created_at: float = 0.0


def _within(inner: list[str], outer: list[str]) -> list[str]:
    """The entries of ``inner`` that ``outer`` does not cover. A glob in ``inner`` is covered
    only by an equal glob or one of ``outer``'s globs matching it as text (``gpt-4*`` inside
    ``gpt-*``); a plain name by any pattern matching it."""
    return [name for name in inner if not any(name == pattern or fnmatch.fnmatchcase(name, pattern)
                                              for pattern in outer)]


def widening_field(team: TeamPolicy, key_policy: Any) -> tuple[str, str] | None:
    """The first field (and a reason) in which ``key_policy`` would widen ``team``, or None."""
    for name in PERMISSION_FIELDS:
        outer = getattr(team, name)
        if outer is None:
            continue
        inner = getattr(key_policy, name)
        if inner is None:
            continue  # unset on the key: the team's list is the key's
        outside = _within(inner, outer)
        if outside:
            return name, f"{outside[0][:64]!r} is outside the team's {name}"
    budget = getattr(key_policy, "budget_usd", None)
    if team.budget_usd_month is not None and budget is not None and budget > team.budget_usd_month:
        return "budget_usd", f"{budget:g} USD is more than the team's monthly budget ({team.budget_usd_month:g} USD)"
    return None


def merged_tags(team: TeamPolicy | None, key_tags: dict[str, str] | None) -> dict[str, str] | None:
    """The key's tags with the team's over them (a team tag wins; a key tag fills a gap)."""
    if team is None or not team.tags:
        return key_tags
    return {**(key_tags or {}), **team.tags}
