"""Prometheus text exposition format (version 0.0.4), written by hand: no dependency."""

from __future__ import annotations

import math
from collections.abc import Mapping

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class Exposition:
    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: Mapping[str, str], value: float) -> None:
        if labels:
            rendered = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self._lines.append(f"{name}{{{rendered}}} {_value(value)}")
        else:
            self._lines.append(f"{name} {_value(value)}")

    def histogram(self, name: str, labels: Mapping[str, str], bounds_seconds: list[float],
                  counts: list[int], total_seconds: float) -> None:
        """``counts`` per bucket (not cumulative), the last one being +Inf."""
        cumulative = 0
        for bound, count in zip([*bounds_seconds, math.inf], counts, strict=True):
            cumulative += count
            le = "+Inf" if math.isinf(bound) else repr(bound)
            self.sample(f"{name}_bucket", {**labels, "le": le}, cumulative)
        self.sample(f"{name}_sum", labels, total_seconds)
        self.sample(f"{name}_count", labels, cumulative)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
