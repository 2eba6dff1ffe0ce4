"""Compiled rules: what the core runs (DESIGN §3).

`pipeline/rules.py` validates the YAML with pydantic and compiles it into these
frozen dataclasses: durations in milliseconds, `when` compiled once, series
normalised to steps. The engine never sees a pydantic model.

A rule without `steps` has exactly one step, with the rule's `delay` (or 0)
and template. In a series, step k fires at `armed_at + steps[k].delay_ms`.
"""

from __future__ import annotations

from dataclasses import dataclass

from nudgeflow.engine.expressions import Expression
from nudgeflow.engine.limits import Cap, QuietHours


@dataclass(frozen=True, slots=True)
class SeriesStep:
    delay_ms: int
    template: str | None


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float
    delay_ms: int | None = None
    inactivity_ms: int | None = None
    template: str | None = None
    send: bool = True


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    variants: tuple[Variant, ...]
    allocation: str = "weights"  # or "bandit"
    conversion_event: str | None = None
    conversion_within_ms: int | None = None

    @property
    def weights(self) -> dict[str, float]:
        return {v.name: v.weight for v in self.variants}

    def variant(self, name: str) -> Variant | None:
        for v in self.variants:
            if v.name == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    triggers: frozenset[str]
    steps: tuple[SeriesStep, ...]
    inactivity_ms: int | None = None
    activity: frozenset[str] | None = None  # None: any event counts as activity
    cancel_on: frozenset[str] = frozenset()
    when: Expression | None = None
    cooldown_ms: int | None = None
    destinations: tuple[str, ...] = ()
    priority: int = 0
    experiment: Experiment | None = None

    @property
    def is_series(self) -> bool:
        return len(self.steps) > 1


@dataclass(frozen=True, slots=True)
class Limits:
    cap: Cap | None = None
    quiet_hours: QuietHours | None = None
