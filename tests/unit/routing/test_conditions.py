"""Conditional routes: a 10-case table (first match wins, default last) and start-time checks."""

from __future__ import annotations

import pytest

from flaregate.config import ConfigError, settings_from_vars
from flaregate.routing.conditions import ConditionalRoute, choose

TABLE = ConditionalRoute.model_validate({
    "headers": ["x-team"],
    "branches": [
        {"when": {"field": "metadata.plan", "op": "eq", "value": "paid"}, "route": "premium"},
        {"when": {"field": "header.x-team", "op": "in", "value": ["search", "ads"]}, "route": "team"},
        {"when": {"and": [{"field": "body.stream", "op": "eq", "value": True},
                          {"field": "body.max_tokens", "op": "gte", "value": 1000}]}, "route": "long-stream"},
        {"when": {"field": "body.tools", "op": "eq", "value": True}, "route": "tools"},
        {"when": {"field": "body.estimated_tokens", "op": "gt", "value": 500}, "route": "big"},
        {"when": {"or": [{"field": "body.model", "op": "regex", "value": "^smart-(fast|cheap)$"},
                         {"field": "metadata.tier", "op": "nin", "value": ["gold", "silver"]}]}, "route": "cheap"},
        {"when": {"field": "body.max_tokens", "op": "lt", "value": 10}, "route": "tiny"},
    ],
    "default": "fallback",
})

USER = [{"role": "user", "content": "hi"}]
CASES = [
    # (tags, headers, body, expected route, matched branch)
    ({"plan": "paid", "tier": "gold"}, {"x-team": "search"}, {"model": "smart"}, "premium", 0),
    ({"plan": "free", "tier": "gold"}, {"x-team": "ads"}, {"model": "smart"}, "team", 1),
    ({"tier": "gold"}, {"x-team": "infra"}, {"model": "smart", "stream": True, "max_tokens": 1000}, "long-stream", 2),
    ({"tier": "gold"}, {}, {"model": "smart", "stream": True, "max_tokens": 999}, "fallback", None),
    ({"tier": "gold"}, {}, {"model": "smart", "tools": [{"type": "function"}]}, "tools", 3),
    ({"tier": "gold"}, {}, {"model": "smart", "messages": [{"role": "user", "content": "x" * 4000}]}, "big", 4),
    ({"tier": "gold"}, {}, {"model": "smart-cheap", "messages": USER}, "cheap", 5),
    ({}, {}, {"model": "smart", "messages": USER}, "cheap", 5),  # no tier: nin matches
    ({"tier": "silver"}, {}, {"model": "smart", "max_tokens": 5}, "tiny", 6),
    ({"tier": "silver"}, {"x-team": "unlisted"}, {"model": "smart", "max_tokens": "5"}, "fallback", None),
]


@pytest.mark.parametrize(("tags", "headers", "body", "route", "branch"), CASES)
def test_route_table(tags, headers, body, route, branch):
    assert choose(TABLE, headers, body, tags) == (route, branch)


def _load(conditional: str) -> None:
    settings_from_vars({"FLAREGATE_ROUTES": '{"a": ["mock"], "b": ["mock"]}', "FLAREGATE_CONDITIONAL_ROUTES": conditional})


@pytest.mark.parametrize(("spec", "named"), [
    ('{"c": {"branches": []}}', "default"),
    ('{"c": {"default": "nope"}}', "nope"),
    ('{"c": {"default": "a", "branches": [{"when": {"field": "body.colour", "op": "eq"}, "route": "b"}]}}',
     "body.colour"),
    ('{"c": {"default": "a", "branches": [{"when": {"field": "header.x-a", "op": "eq"}, "route": "b"}]}}',
     "header.x-a"),
    ('{"c": {"default": "a", "branches": [{"when": {"field": "body.max_tokens", "op": "gt", "value": "9"},'
     ' "route": "b"}]}}', "body.max_tokens"),
    ('{"c": {"default": "a", "branches": [{"when": {"field": "body.model", "op": "regex", "value": "("},'
     ' "route": "b"}]}}', "regex"),
    ('{"c": {"default": "a", "branches": [{"when": {"field": "body.model", "op": "like"}, "route": "b"}]}}', "op"),
    ('{"a": {"default": "b"}}', "also a plain route"),
    ('{"c": {"default": "a", "branches": [{"when": {"field": "metadata.x", "op": "eq"}, "route": "zz"}]}}',
     "branches.0.route"),
])
def test_bad_tables_fail_at_start_naming_the_field(spec, named):
    with pytest.raises(ConfigError) as info:
        _load(spec)
    assert named in str(info.value)
