"""Spend reports: ``/v1/analytics?group_by=team|key|model|provider|tag:NAME[&format=csv]``,
one dimension's groups per window with requests, errors, tokens, cost and cache savings.

Read from the hub's windowed rollups (its ``analytics`` answer, so a merge across hub shards
covers these too): key, model and provider from ``hub_rollup`` (kept a year at daily
resolution), team and the tags listed in ``REPORT_TAGS`` from ``hub_dimension`` (the same
rollup and retention). A tag not listed there comes from the short-kept tag rows (7 days of
minute rows, the client's tags being unbounded).

By team and by key, the JSON report also carries ``budgets``: each team's (or usable key's)
name and budgets from the security store, so a reader (the dashboard) shows spend against
them from this one answer. The windows are the hub's (the last 24 hours, 30 days), not the
budgets' own UTC day and calendar month: the exact amount a budget has left is the
limiter's, at ``/admin/teams/{id}/usage``."""

from __future__ import annotations

import csv
import io
from typing import Any

from ..errors import GatewayError

DIMENSIONS = ("team", "key", "model", "provider")
TEAM_BUDGET_FIELDS = ("budget_usd_day", "budget_usd_month", "budget_tokens_day", "budget_tokens_month")
FIELDS = ("requests", "errors", "tokens_in", "tokens_out", "tokens", "cost_usd", "cache_hits",
          "cache_tokens_saved", "cache_bytes_saved")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell


def check_group_by(group_by: str) -> str:
    if group_by in DIMENSIONS or (group_by.startswith("tag:") and 4 < len(group_by) <= 68):
        return group_by
    raise GatewayError(400, "group_by must be team, key, model, provider or tag:<name>, e.g. group_by=team.",
                       code="invalid_value", param="group_by")


def _row(counters: dict[str, Any]) -> dict[str, Any]:
    def number(name: str) -> Any:
        value = counters.get(name) or 0
        return round(float(value), 9) if name == "cost_usd" else int(value)
    row = {name: number(name) for name in FIELDS if name != "tokens"}
    row["tokens"] = row["tokens_in"] + row["tokens_out"]
    return {name: row[name] for name in FIELDS}


def _groups(window: dict[str, Any], group_by: str, report_tags: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    if group_by == "team":
        source = window.get("by_team") or {}
    elif group_by in ("key", "model", "provider"):
        source = window.get(f"by_{group_by}") or {}
    else:
        tag = group_by[4:]
        listed = tag in report_tags
        source = ((window.get("by_report_tag") or {}) if listed else (window.get("by_tag") or {})).get(tag, {})
    return {name: _row(counters) for name, counters in sorted(source.items())}


def report(data: dict[str, Any], group_by: str, report_tags: tuple[str, ...]) -> dict[str, Any]:
    """The hub's analytics answer reduced to one dimension's groups per window."""
    windows = {}
    for name, window in (data.get("windows") or {}).items():
        groups = _groups(window, group_by, report_tags)
        total = _row({f: sum(g[f] for g in groups.values()) for f in FIELDS if f != "tokens"})
        windows[name] = {"window": name, "start": window.get("start"), "end": window.get("end"),
                         "groups": groups, "total": total}
    return {"ts": data.get("ts"), "group_by": group_by, "windows": windows}


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text  # names may be client tag values


def to_csv(spend: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["window", "start", "end", spend["group_by"], *FIELDS])
    for name, window in spend["windows"].items():
        for group, row in window["groups"].items():
            writer.writerow([name, window["start"], window["end"], _cell(group), *(row[f] for f in FIELDS)])
    return out.getvalue()


async def budgets(store: Any, group_by: str, now: float) -> dict[str, dict[str, Any]]:
    """The teams' (``group_by="team"``) or the usable keys' (``"key"``) names and budgets."""
    if group_by == "team":
        return {t["id"]: {"name": t.get("name") or "", **{f: t.get(f) for f in TEAM_BUDGET_FIELDS}}
                for t in await store.call("teams.list", {})}
    usable = [k for k in await store.call("keys.list", {}) if k.get("revoked_at") is None
              and (k.get("expires_at") is None or k["expires_at"] > now)]
    return {k["id"]: {"name": k.get("name") or "", "team_id": (k.get("policy") or {}).get("team_id"),
                      "budget_usd_month": (k.get("policy") or {}).get("budget_usd")} for k in usable}
