"""The `rules:` and `limits:` sections of nudgeflow.yaml (DESIGN §3, §3.1) and their compilation.

Pydantic models check each field (unknown keys, durations, expressions);
`rule_problems` checks what spans fields (config/flows.py what spans a journey's
steps); `compile_rule` / `compile_limits` turn a validated model into the frozen
`engine.rules` dataclasses the core runs (milliseconds, compiled expressions,
programs), so the engine never sees pydantic.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from nudgeflow.config.fields import (
    ClockTime,
    Duration,
    EventType,
    EventTypes,
    Name,
    PositiveDuration,
    Strict,
    WhenExpression,
    Zone,
    compiled_expression,
)
from nudgeflow.config.flows import (
    INACTIVITY_HINT,
    AnyStep,
    FlowStepModel,
    SeriesStepModel,
    compile_flow,
    flow_destinations,
    flow_problems,
    flow_templates,
    is_flow,
)
from nudgeflow.engine.attribution import DEFAULT_CONVERSION_EVENT, DEFAULT_CONVERSION_WITHIN_MS
from nudgeflow.engine.durations import parse_duration
from nudgeflow.engine.limits import Cap, QuietHours
from nudgeflow.engine.rules import DEFAULT_MAX_RUNS, Experiment, Limits, Rule, SeriesStep, Variant
from nudgeflow.engine.steps import Reentry

__all__ = ["Duration", "EventTypes", "RuleModel", "compiled_expression"]


def _reentry(value: str) -> str:
    words = value.split()
    if value in ("never", "always") or (len(words) == 2 and words[0] == "after"):
        if len(words) == 2:
            parse_duration(words[1])  # DurationError is a ValueError: named at the field
        return value
    raise ValueError(f"reentry {value!r}: use never, always or after <duration> (e.g. after 7d)")


StepModel = SeriesStepModel  # the older name


class VariantModel(Strict):
    weight: float = Field(ge=0)
    delay: Duration | None = None
    inactivity: PositiveDuration | None = None
    template: str | None = None
    send: bool = True


class ConversionModel(Strict):
    event: EventType
    within: PositiveDuration


class ExperimentModel(Strict):
    name: Name | None = None  # default: the rule's name
    variants: dict[Name, VariantModel] = Field(min_length=1)
    allocation: Literal["weights", "bandit"] = "weights"
    conversion: ConversionModel | None = None


class RuleModel(Strict):
    name: Name
    trigger: EventTypes = Field(min_length=1)
    delay: Duration | None = None
    inactivity: PositiveDuration | None = None
    activity: EventTypes | None = None
    cancel_on: EventTypes = []
    exit_on: EventTypes = []  # the same as cancel_on (DESIGN §3.1)
    when: WhenExpression | None = None
    cooldown: Duration | None = None
    template: str | None = None  # a journey's default for its sends
    destinations: list[str] | None = None  # default: every configured destination
    steps: list[AnyStep] | None = Field(None, min_length=1)
    priority: int = 0
    experiment: ExperimentModel | None = None
    entry: WhenExpression | None = None
    instance: WhenExpression | None = None
    reentry: Annotated[str, AfterValidator(_reentry)] | None = None
    restart: bool = False
    conversion: ConversionModel | None = None

    @property
    def flow(self) -> bool:
        """Written with journey features: journey semantics (DESIGN §3.1) apply."""
        return (
            is_flow(self.steps)
            or any(x is not None for x in (self.entry, self.instance, self.reentry))
            or self.restart
        )

    @property
    def flow_steps(self) -> list[FlowStepModel]:
        return [s for s in self.steps or () if isinstance(s, FlowStepModel)]

    @property
    def exits(self) -> list[str]:
        return list(dict.fromkeys([*self.cancel_on, *self.exit_on]))

    def templates(self) -> Iterator[tuple[str, str]]:
        """(field path, template name) for every template this rule may render."""
        if self.template is not None:
            yield "template", self.template
        for i, step in enumerate(self.steps or ()):
            if isinstance(step, SeriesStepModel):
                yield f"steps[{i}].template", step.template
        yield from flow_templates(self.flow_steps)
        if self.experiment is not None:
            for name, v in self.experiment.variants.items():
                if v.template is not None:
                    yield f"experiment.variants.{name}.template", v.template

    def destination_refs(self) -> Iterator[tuple[str, str]]:
        """(field path, destination name) for every destination the rule names."""
        for i, dest in enumerate(self.destinations or ()):
            yield f"destinations[{i}]", dest
        yield from flow_destinations(self.flow_steps)


class CapModel(Strict):
    count: int = Field(ge=0)
    per: PositiveDuration


class QuietHoursModel(Strict):
    start: ClockTime
    end: ClockTime
    action: Literal["defer", "drop"] = "defer"
    fallback_timezone: Zone = "UTC"


class LimitsModel(Strict):
    max_per_user: CapModel | None = None
    quiet_hours: QuietHoursModel | None = None
    # concurrent runs of one rule per user (instances); the oldest is evicted
    max_runs: int = Field(DEFAULT_MAX_RUNS, ge=1, le=1000)


def rule_problems(rule: RuleModel) -> Iterator[tuple[str, str]]:
    """(field, message) for mistakes that span fields of one rule."""
    if rule.delay is not None and rule.inactivity is not None:
        yield "delay", "use either delay or inactivity, not both"
    if rule.steps is not None:
        yield from _steps_problems(rule)
    exp = rule.experiment
    variants = exp.variants if exp is not None else {}
    uses_inactivity = rule.inactivity is not None or any(
        v.inactivity is not None for v in variants.values()
    )
    if rule.activity is not None and not uses_inactivity and not is_flow(rule.steps):
        yield "activity", "activity only matters with inactivity"
    if exp is not None:
        yield from _experiment_problems(rule, variants)
    dupes = {t for t in rule.trigger if t in rule.exits}
    if dupes:
        field = "cancel_on" if dupes & set(rule.cancel_on) else "exit_on"
        yield field, f"{', '.join(sorted(dupes))} both arms and cancels the rule"


def _steps_problems(rule: RuleModel) -> Iterator[tuple[str, str]]:
    steps = rule.steps or []
    flow = rule.flow_steps
    if flow and len(flow) != len(steps):
        yield "steps", "use either {delay, template} steps or journey steps, not both"
        return
    if flow:
        for key in ("delay", "inactivity", "activity"):
            if getattr(rule, key) is not None:
                yield key, f"a journey sets {key} in a wait step, not on the rule"
        yield from flow_problems(flow, rule.template)
        return
    if rule.inactivity is not None:
        yield "inactivity", f"a rule with steps waits for inactivity in a step: {INACTIVITY_HINT}"
    for key in ("delay", "template"):
        if getattr(rule, key) is not None:
            yield key, f"a rule with steps sets {key} per step, not on the rule"
    delays = [parse_duration(s.delay) for s in steps if isinstance(s, SeriesStepModel)]
    if delays != sorted(delays):
        yield "steps", "step delays must not decrease (each is counted from the arming)"


def _experiment_problems(
    rule: RuleModel, variants: dict[str, VariantModel]
) -> Iterator[tuple[str, str]]:
    if sum(v.weight for v in variants.values()) <= 0:
        yield "experiment.variants", "variant weights must add up to more than 0"
    for name, v in variants.items():
        where = f"experiment.variants.{name}"
        if v.delay is not None and v.inactivity is not None:
            yield where, "use either delay or inactivity, not both"
        if rule.steps is not None and (v.delay or v.inactivity):
            yield where, "a series cannot override delay or inactivity per variant"
        if v.inactivity is not None and rule.delay is not None:
            yield f"{where}.inactivity", "the rule uses delay; override delay instead"
        if v.delay is not None and rule.inactivity is not None:
            yield f"{where}.delay", "the rule uses inactivity; override inactivity instead"


def _ms(value: str | None) -> int | None:
    return parse_duration(value) if value is not None else None


def _compile_experiment(exp: ExperimentModel, rule_name: str) -> Experiment:
    return Experiment(
        name=exp.name or rule_name,
        variants=tuple(
            Variant(
                name=name,
                weight=v.weight,
                delay_ms=_ms(v.delay),
                inactivity_ms=_ms(v.inactivity),
                template=v.template,
                send=v.send,
            )
            for name, v in exp.variants.items()
        ),
        allocation=exp.allocation,
        conversion_event=exp.conversion.event if exp.conversion else None,
        conversion_within_ms=_ms(exp.conversion.within) if exp.conversion else None,
    )


def _compile_reentry(value: str | None) -> Reentry:
    if value is None:
        return Reentry()
    if value in ("never", "always"):
        return Reentry(value)
    return Reentry("after", parse_duration(value.split()[1]))


def compile_rule(rule: RuleModel, *, all_destinations: Sequence[str]) -> Rule:
    destinations = tuple(rule.destinations if rule.destinations is not None else all_destinations)
    flow = rule.flow_steps
    steps: tuple[SeriesStep, ...] = ()
    if rule.steps is not None and not flow:
        steps = tuple(
            SeriesStep(parse_duration(s.delay), s.template)
            for s in rule.steps
            if isinstance(s, SeriesStepModel)
        )
    elif not flow:
        steps = (SeriesStep(_ms(rule.delay) or 0, rule.template),)
    extra: dict[str, Any] = {}
    if flow:
        extra["program"] = compile_flow(flow, rule.template, destinations)
    if rule.conversion is not None:
        extra["conversion_event"] = rule.conversion.event
        extra["conversion_within_ms"] = _ms(rule.conversion.within)
    elif rule.experiment is None or rule.experiment.conversion is None:
        extra["conversion_event"] = DEFAULT_CONVERSION_EVENT  # every rule is attributed
        extra["conversion_within_ms"] = DEFAULT_CONVERSION_WITHIN_MS
    return Rule(
        name=rule.name,
        triggers=frozenset(rule.trigger),
        steps=steps,
        inactivity_ms=_ms(rule.inactivity),
        activity=frozenset(rule.activity) if rule.activity is not None else None,
        cancel_on=frozenset(rule.exits),
        when=compiled_expression(rule.when) if rule.when is not None else None,
        cooldown_ms=_ms(rule.cooldown),
        destinations=destinations,
        priority=rule.priority,
        experiment=_compile_experiment(rule.experiment, rule.name) if rule.experiment else None,
        flow=rule.flow,
        entry=compiled_expression(rule.entry) if rule.entry is not None else None,
        instance=compiled_expression(rule.instance) if rule.instance is not None else None,
        reentry=_compile_reentry(rule.reentry),
        restart=rule.restart,
        **extra,
    )


def compile_limits(limits: LimitsModel) -> Limits:
    cap = None
    if limits.max_per_user is not None:
        cap = Cap(limits.max_per_user.count, parse_duration(limits.max_per_user.per))
    quiet = None
    if limits.quiet_hours is not None:
        q = limits.quiet_hours
        quiet = QuietHours(q.start, q.end, q.action, q.fallback_timezone)
    return Limits(cap=cap, quiet_hours=quiet, max_runs=limits.max_runs)
