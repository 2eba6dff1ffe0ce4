"""Scenario results: one flat record of named figures per run, printed as a table or JSON.

The field names are the public contract of `nudgeflow bench --json` (issue 8),
so they are kept flat: `{"scenario": "latency", "rate": 1000, "p99_ms": 7.1}`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Figure = int | float | str | None


@dataclass(frozen=True)
class Result:
    scenario: str
    figures: dict[str, Figure]
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> str:
        return json.dumps({"scenario": self.scenario, **self.figures}, sort_keys=False)


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (the value below which `pct`% of samples lie); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 3)


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _cell(value: Figure) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(results: Iterable[Result]) -> str:
    """One block per scenario: `scenario  name=value  name=value`, aligned by scenario."""
    lines: list[str] = []
    for r in results:
        cells = "  ".join(f"{k}={_cell(v)}" for k, v in r.figures.items())
        lines.append(f"{r.scenario:<11} {cells}")
        lines.extend(f"{'':<11} note: {n}" for n in r.notes)
    return "\n".join(lines)


def as_dict(result: Result) -> dict[str, Any]:
    return {"scenario": result.scenario, **result.figures}
