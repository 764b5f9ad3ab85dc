"""The budget-alert setting (``BUDGET_ALERT_AT``): the fractions of a budget whose crossing
raises a ``budget.threshold`` webhook and hub event, once per budget and period
(``thresholds.py``). The limit policies themselves are in ``policies.py``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class BudgetAlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Fractions of a budget (0 < f < 1), e.g. "0.5,0.8"; empty or "off": no soft alerts.
    alert_at: tuple[float, ...] = Field(default=(0.8,), max_length=8)

    @field_validator("alert_at")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for fraction in value:
            if not 0 < fraction < 1:
                raise ValueError(f"a budget alert threshold is a fraction between 0 and 1, not {fraction:g}")
        return tuple(sorted(set(value)))
