"""The `rules:` and `limits:` sections of nudgeflow.yaml (DESIGN §3) and their compilation.

Pydantic models check each field (unknown keys, durations, expressions);
`rule_problems` checks what spans fields; `compile_rule` / `compile_limits`
turn a validated model into the frozen `engine.rules` dataclasses the core
runs (milliseconds, compiled expressions), so the engine never sees pydantic.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from nudgeflow.engine.durations import DurationError, parse_duration
from nudgeflow.engine.expressions import Expression, ExpressionError, compile_expression
from nudgeflow.engine.limits import Cap, QuietHours, zone_for
from nudgeflow.engine.rules import Experiment, Limits, Rule, SeriesStep, Variant


def _duration(value: str) -> str:
    try:
        parse_duration(value)
    except DurationError as exc:
        raise ValueError(str(exc)) from None
    return value


def _positive_duration(value: str) -> str:
    if parse_duration(_duration(value)) <= 0:
        raise ValueError(f"duration {value!r} must be greater than zero")
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _event_type(value: str) -> str:
    if not value or not value.strip():
        raise ValueError("event type must not be empty")
    return value


@lru_cache(maxsize=512)
def compiled_expression(source: str) -> Expression:
    """Compile once per distinct source, whether validating or compiling."""
    return compile_expression(source)


def _expression(value: str) -> str:
    try:
        compiled_expression(value)
    except ExpressionError as exc:
        raise ValueError(f"{exc} in {value!r}") from None
    return value


def _clock(value: Any) -> dt.time:
    if isinstance(value, int):  # YAML 1.1 reads an unquoted 21:00 as sexagesimal 1260
        value = f"{value // 60:02d}:{value % 60:02d}"
    if isinstance(value, str):
        try:
            return dt.time.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f'invalid time {value!r} (use HH:MM, e.g. "21:00")')


def _zone(value: str) -> str:
    try:
        zone_for(None, value)
    except ValueError:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name, e.g. UTC)") from None
    return value


Duration = Annotated[str, AfterValidator(_duration)]
PositiveDuration = Annotated[str, AfterValidator(_positive_duration)]
EventType = Annotated[str, AfterValidator(_event_type)]
EventTypes = Annotated[list[EventType], BeforeValidator(_as_list)]
WhenExpression = Annotated[str, AfterValidator(_expression)]
ClockTime = Annotated[dt.time, BeforeValidator(_clock)]
Zone = Annotated[str, AfterValidator(_zone)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepModel(_Strict):
    delay: Duration
    template: str


class VariantModel(_Strict):
    weight: float = Field(ge=0)
    delay: Duration | None = None
    inactivity: PositiveDuration | None = None
    template: str | None = None
    send: bool = True


class ConversionModel(_Strict):
    event: EventType
    within: PositiveDuration


class ExperimentModel(_Strict):
    name: Name | None = None  # default: the rule's name
    variants: dict[Name, VariantModel] = Field(min_length=1)
    allocation: Literal["weights", "bandit"] = "weights"
    conversion: ConversionModel | None = None


class RuleModel(_Strict):
    name: Name
    trigger: EventTypes = Field(min_length=1)
    delay: Duration | None = None
    inactivity: PositiveDuration | None = None
    activity: EventTypes | None = None
    cancel_on: EventTypes = []
    when: WhenExpression | None = None
    cooldown: Duration | None = None
    template: str | None = None
    destinations: list[str] | None = None  # default: every configured destination
    steps: list[StepModel] | None = Field(None, min_length=1)
    priority: int = 0
    experiment: ExperimentModel | None = None

    def templates(self) -> Iterator[tuple[str, str]]:
        """(field path, template name) for every template this rule may render."""
        if self.template is not None:
            yield "template", self.template
        for i, step in enumerate(self.steps or ()):
            yield f"steps[{i}].template", step.template
        if self.experiment is not None:
            for name, v in self.experiment.variants.items():
                if v.template is not None:
                    yield f"experiment.variants.{name}.template", v.template


class CapModel(_Strict):
    count: int = Field(ge=0)
    per: PositiveDuration


class QuietHoursModel(_Strict):
    start: ClockTime
    end: ClockTime
    action: Literal["defer", "drop"] = "defer"
    fallback_timezone: Zone = "UTC"


class LimitsModel(_Strict):
    max_per_user: CapModel | None = None
    quiet_hours: QuietHoursModel | None = None


def rule_problems(rule: RuleModel) -> Iterator[tuple[str, str]]:
    """(field, message) for mistakes that span fields of one rule."""
    if rule.delay is not None and rule.inactivity is not None:
        yield "delay", "use either delay or inactivity, not both"
    if rule.steps is not None:
        for key in ("delay", "inactivity", "template"):
            if getattr(rule, key) is not None:
                yield key, f"a rule with steps sets {key} per step, not on the rule"
        delays = [parse_duration(s.delay) for s in rule.steps]
        if delays != sorted(delays):
            yield "steps", "step delays must not decrease (each is counted from the arming)"
    exp = rule.experiment
    variants = exp.variants if exp is not None else {}
    uses_inactivity = rule.inactivity is not None or any(
        v.inactivity is not None for v in variants.values()
    )
    if rule.activity is not None and not uses_inactivity:
        yield "activity", "activity only matters with inactivity"
    if exp is not None:
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
    dupes = {t for t in rule.trigger if t in rule.cancel_on}
    if dupes:
        yield "cancel_on", f"{', '.join(sorted(dupes))} both arms and cancels the rule"


def _ms(value: str | None) -> int | None:
    return parse_duration(value) if value is not None else None


def compile_rule(rule: RuleModel, *, all_destinations: Sequence[str]) -> Rule:
    if rule.steps is not None:
        steps = tuple(SeriesStep(parse_duration(s.delay), s.template) for s in rule.steps)
    else:
        steps = (SeriesStep(_ms(rule.delay) or 0, rule.template),)
    experiment = None
    if rule.experiment is not None:
        exp = rule.experiment
        experiment = Experiment(
            name=exp.name or rule.name,
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
    return Rule(
        name=rule.name,
        triggers=frozenset(rule.trigger),
        steps=steps,
        inactivity_ms=_ms(rule.inactivity),
        activity=frozenset(rule.activity) if rule.activity is not None else None,
        cancel_on=frozenset(rule.cancel_on),
        when=compiled_expression(rule.when) if rule.when is not None else None,
        cooldown_ms=_ms(rule.cooldown),
        destinations=tuple(
            rule.destinations if rule.destinations is not None else all_destinations
        ),
        priority=rule.priority,
        experiment=experiment,
    )


def compile_limits(limits: LimitsModel) -> Limits:
    cap = None
    if limits.max_per_user is not None:
        cap = Cap(limits.max_per_user.count, parse_duration(limits.max_per_user.per))
    quiet = None
    if limits.quiet_hours is not None:
        q = limits.quiet_hours
        quiet = QuietHours(q.start, q.end, q.action, q.fallback_timezone)
    return Limits(cap=cap, quiet_hours=quiet)
