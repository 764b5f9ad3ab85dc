"""Reading flat string variables (env, ``[vars]``, secrets) into settings fields."""

from __future__ import annotations

from collections.abc import Mapping


def set_fields(vars: Mapping[str, str], names: Mapping[str, str]) -> dict[str, str]:
    """``{field: value}`` for each ``variable -> field`` in ``names`` whose variable is set
    (present and not empty); pydantic parses the strings."""
    return {field: vars[var] for var, field in names.items() if vars.get(var, "") != ""}
