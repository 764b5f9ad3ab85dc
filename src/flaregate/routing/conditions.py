"""Conditional routes: one alias that picks another route by conditions on the request.

``FLAREGATE_CONDITIONAL_ROUTES``: ``{"smart": {"headers": ["x-team"], "branches": [
{"when": {"field": "metadata.plan", "op": "eq", "value": "paid"}, "route": "gpt-4o"},
{"when": {"or": [{"field": "body.tools", "op": "eq", "value": true},
                 {"field": "body.estimated_tokens", "op": "gt", "value": 4000}]}, "route": "claude"}],
"default": "gpt-4o-mini"}}``. Branches are tried in order, the first match wins, and
``default`` is required. Fields: ``metadata.<tag>``, ``header.<name>`` (only headers the
route lists), ``body.model``, ``body.max_tokens``, ``body.stream``, ``body.tools`` (present),
``body.estimated_tokens``. Operators: eq ne gt gte lt lte in nin regex, combined with
``and`` / ``or``. Everything is checked at start; a bad table names the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from ..accounting import estimate_tokens

_BODY_FIELDS = ("model", "max_tokens", "stream", "tools", "estimated_tokens")
_ORDERED = ("gt", "gte", "lt", "lte")
Op = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "regex"]


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: StrictStr | None = None
    op: Op | None = None
    value: Any = None
    and_: tuple[Condition, ...] | None = Field(default=None, alias="and", min_length=1)
    or_: tuple[Condition, ...] | None = Field(default=None, alias="or", min_length=1)

    @model_validator(mode="after")
    def _one_shape(self) -> Condition:
        groups = [g for g in (self.and_, self.or_) if g is not None]
        if groups:
            if len(groups) > 1 or self.field is not None or self.op is not None:
                raise ValueError("a condition is either {and: [...]}, {or: [...]} or {field, op, value}")
            return self
        if self.field is None or self.op is None:
            raise ValueError("a condition needs 'field' and 'op' (or 'and' / 'or')")
        source, _, name = self.field.partition(".")
        if source not in ("metadata", "header", "body") or not name:
            raise ValueError(f"field {self.field!r}: use metadata.<tag>, header.<name> or body.<param>")
        if source == "body" and name not in _BODY_FIELDS:
            raise ValueError(f"field {self.field!r}: body fields are {list(_BODY_FIELDS)}")
        if self.op in _ORDERED and (not isinstance(self.value, int | float) or isinstance(self.value, bool)):
            raise ValueError(f"field {self.field!r}: operator {self.op} needs a number")
        if self.op in ("in", "nin") and not isinstance(self.value, list):
            raise ValueError(f"field {self.field!r}: operator {self.op} needs a list")
        if self.op == "regex":
            if not isinstance(self.value, str):
                raise ValueError(f"field {self.field!r}: operator regex needs a string")
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"field {self.field!r}: regex does not compile ({exc})") from None
        return self

    def fields(self) -> list[str]:
        if self.field is not None:
            return [self.field]
        return [f for c in (self.and_ or self.or_ or ()) for f in c.fields()]


class Branch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    when: Condition
    route: StrictStr


class ConditionalRoute(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    headers: tuple[StrictStr, ...] = ()  # the request headers conditions may read
    branches: tuple[Branch, ...] = Field(default=(), max_length=100)
    default: StrictStr

    @model_validator(mode="after")
    def _headers_are_listed(self) -> ConditionalRoute:
        listed = {h.lower() for h in self.headers}
        for index, branch in enumerate(self.branches):
            for field in branch.when.fields():
                if field.startswith("header.") and field[7:].lower() not in listed:
                    raise ValueError(f"branches.{index}: field {field!r} reads a header not listed in 'headers'")
        return self


def _value(field: str, headers: Mapping[str, str], body: Mapping[str, Any], tags: Mapping[str, str]) -> Any:
    source, _, name = field.partition(".")
    if source == "metadata":
        return tags.get(name)
    if source == "header":
        return headers.get(name.lower())
    if name == "tools":
        return bool(body.get("tools"))
    if name == "estimated_tokens":
        return estimate_tokens({"messages": body.get("messages") or body.get("input"),
                                "tools": body.get("tools")}).prompt_tokens
    if name == "max_tokens":
        for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            if body.get(key) is not None:
                return body[key]
        return None
    if name == "stream":
        return body.get("stream") is True
    return body.get(name)


def _number(value: Any, text: bool) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if text and isinstance(value, str):
        try:
            return float(value)  # header and tag values are strings; body values keep their type
        except ValueError:
            return None
    return None


def matches(condition: Condition, headers: Mapping[str, str], body: Mapping[str, Any],
            tags: Mapping[str, str]) -> bool:
    if condition.and_ is not None:
        return all(matches(c, headers, body, tags) for c in condition.and_)
    if condition.or_ is not None:
        return any(matches(c, headers, body, tags) for c in condition.or_)
    assert condition.field is not None
    actual, want, op = _value(condition.field, headers, body, tags), condition.value, condition.op
    if op == "eq":
        return bool(actual == want)
    if op == "ne":
        return bool(actual != want)
    if op == "in":
        return actual in want
    if op == "nin":
        return actual not in want
    if op == "regex":
        return isinstance(actual, str) and re.search(want, actual) is not None
    number = _number(actual, not condition.field.startswith("body."))
    if number is None:
        return False
    return {"gt": number > want, "gte": number >= want, "lt": number < want, "lte": number <= want}[op or "eq"]


def choose(route: ConditionalRoute, headers: Mapping[str, str], body: Mapping[str, Any],
           tags: Mapping[str, str]) -> tuple[str, int | None]:
    """(the chosen route alias, the index of the branch that matched, or None: the default)."""
    for index, branch in enumerate(route.branches):
        if matches(branch.when, headers, body, tags):
            return branch.route, index
    return route.default, None
