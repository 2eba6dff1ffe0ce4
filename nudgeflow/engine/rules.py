"""Compiled rules: what the core runs (DESIGN §3, §3.1).

`config/rules.py` validates the YAML with pydantic and compiles it into these
frozen dataclasses: durations in milliseconds, expressions compiled once, steps
compiled to a program of nodes (engine/steps.py). The engine never sees a
pydantic model.

A rule without `steps` has exactly one series step, with the rule's `delay` (or 0)
and template. In a series, step k fires at `armed_at + steps[k].delay_ms`. When no
`program` is given (the old forms, and tests that build a Rule by hand), it is
derived from `steps`; a journey passes its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

from nudgeflow.engine.consent import Consent
from nudgeflow.engine.expressions import Expression, compile_expression
from nudgeflow.engine.limits import Cap, QuietHours
from nudgeflow.engine.sandbox.budget import Budget
from nudgeflow.engine.steps import Node, Reentry, series_program

DEFAULT_MAX_RUNS = 16
RUN_SEP = "\x1f"  # between the rule name and the instance in a run's key (names never hold it)


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
    steps: tuple[SeriesStep, ...] = ()
    inactivity_ms: int | None = None
    activity: frozenset[str] | None = None  # None: any event counts as activity
    cancel_on: frozenset[str] = frozenset()  # also `exit_on`
    when: Expression | None = None
    cooldown_ms: int | None = None
    destinations: tuple[str, ...] = ()
    priority: int = 0
    experiment: Experiment | None = None
    # -- journeys (DESIGN §3.1) ----------------------------------------------------------
    program: tuple[Node, ...] = ()
    flow: bool = False  # written with journey features: exits are audited, sends go on
    entry: Expression | None = None
    instance: Expression | None = None
    reentry: Reentry = field(default_factory=Reentry)
    restart: bool = False
    conversion_event: str | None = None  # default: the experiment's
    conversion_within_ms: int | None = None
    paused: bool = False  # live rules (DESIGN §3.3): due sends are suppressed, runs go on
    # derived in __post_init__ (read on every event: plain attributes, not properties)
    keyed: bool = field(init=False, default=False)  # runs per instance, or one per trigger
    remembers_ends: bool = field(init=False, default=False)  # reentry after D > 0
    simple_start: bool = field(init=False, default=False)  # a trigger with no run just starts

    def __post_init__(self) -> None:
        if not self.program:
            steps = self.steps or (SeriesStep(0, None),)
            program = series_program(
                tuple(s.delay_ms for s in steps),
                tuple(s.template for s in steps),
                self.destinations,
            )
            object.__setattr__(self, "program", program)
        exp = self.experiment
        if self.conversion_event is None and exp is not None and exp.conversion_event:
            object.__setattr__(self, "conversion_event", exp.conversion_event)
            object.__setattr__(self, "conversion_within_ms", exp.conversion_within_ms)
        keyed = self.instance is not None or self.reentry.mode == "always"
        object.__setattr__(self, "keyed", keyed)
        ends = self.reentry.remembers and self.reentry.mode == "after"
        object.__setattr__(self, "remembers_ends", ends)
        simple = not keyed and self.entry is None and not self.reentry.remembers
        object.__setattr__(self, "simple_start", simple)

    @property
    def is_series(self) -> bool:
        return len(self.steps) > 1


@dataclass(frozen=True, slots=True)
class Limits:
    cap: Cap | None = None
    quiet_hours: QuietHours | None = None
    max_runs: int = DEFAULT_MAX_RUNS  # concurrent runs per rule per user; the oldest is evicted
    consent: Consent | None = None  # DESIGN §3.2: checked before every send (firing.py)


def under_budget(rules: tuple[Rule, ...], budget: Budget) -> tuple[Rule, ...]:
    """The rules with every expression (`when`, `entry`, `instance`, a step's `when`, a
    branch's `if`, a wait's `where`) recompiled under `budget`: config validation compiles
    them under the default one, the worker runs them under its NUDGEFLOW_RENDER_* settings
    like its templates (issue 21.1)."""
    return tuple(_rebudgeted(rule, budget) for rule in rules)


def _rebudgeted(value: Any, budget: Budget) -> Any:
    if isinstance(value, Expression):
        if value.budget == budget:
            return value
        return compile_expression(value.source, budget)
    if isinstance(value, tuple):
        items = tuple(_rebudgeted(v, budget) for v in value)
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if is_dataclass(value) and not isinstance(value, type):
        changed = {}
        for f in fields(value):
            if f.init:
                old = getattr(value, f.name)
                new = _rebudgeted(old, budget)
                if new is not old:
                    changed[f.name] = new
        return replace(value, **changed) if changed else value
    return value
