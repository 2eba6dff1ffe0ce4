"""Journey steps in nudgeflow.yaml (DESIGN §3.1): models, checks and compilation.

A step is one of `wait`, `send`, `branch`, `split`, `exit` (a bare `- exit` too),
with an optional `name` that jumps (`then`, `else`) go to. `flow_problems` finds
what spans steps: jumps to unknown steps, a send with no template and no default
(the rule's `template`), an `until` without `within`, and a loop on which nothing
waits (it would spin). Each problem names its step (`steps[3]`) and field; the
loader puts the rule in front. `compile_flow` turns the steps into the engine's
program (engine/steps.py): names become indexes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator, Discriminator, Field, Tag, model_validator

from nudgeflow.config.fields import (
    Duration,
    EventTypes,
    Name,
    PositiveDuration,
    Strict,
    WhenExpression,
    compiled_expression,
)
from nudgeflow.engine.durations import parse_duration
from nudgeflow.engine.steps import Action, Branch, Exit, Node, Path, Send, SendAt, Split, Wait

KINDS = ("wait", "send", "branch", "split", "exit")
# How a flow waits for inactivity and then sends: the hint of the errors that meet it.
INACTIVITY_HINT = (
    "write journey steps: `- wait: {inactivity: 30m, activity: [...]}` then "
    "`- send: {template: ...}`"
)


class SeriesStepModel(Strict):
    """The older form: `{delay, template}`, each delay counted from the arming."""

    delay: Duration
    template: str

    @model_validator(mode="before")
    @classmethod
    def _no_inactivity(cls, value: Any) -> Any:
        if isinstance(value, dict) and ("inactivity" in value or "activity" in value):
            raise ValueError(
                f"a {{delay, template}} step cannot wait for inactivity: {INACTIVITY_HINT}"
            )
        return value


class WaitModel(Strict):
    delay: Duration | None = None
    inactivity: PositiveDuration | None = None
    activity: EventTypes | None = None
    until: EventTypes | None = None
    where: WhenExpression | None = None
    within: PositiveDuration | None = None
    then: Name | None = None
    else_: Name | None = Field(None, alias="else")


class SendAtModel(Strict):
    best_hour: bool
    within: PositiveDuration


class SendModel(Strict):
    template: str | None = None  # default: the rule's template
    destinations: list[str] | None = None  # default: the rule's
    when: WhenExpression | None = None
    send_at: SendAtModel | None = None


class BranchModel(Strict):
    if_: WhenExpression = Field(alias="if")
    then: Name | None = None  # default: the next step
    else_: Name | None = Field(None, alias="else")


class PathModel(Strict):
    weight: float = Field(ge=0)
    then: Name | None = None


class FlowStepModel(Strict):
    name: Name | None = None
    wait: WaitModel | None = None
    send: SendModel | None = None
    branch: BranchModel | None = None
    split: dict[Name, PathModel] | None = None
    exit: bool | None = None

    @property
    def kinds(self) -> list[str]:
        return [k for k in KINDS if getattr(self, k) is not None]


def _bare(value: Any) -> Any:
    """`- exit` is `{exit: true}`; `- send` is a send with the rule's template."""
    if value == "exit":
        return {"exit": True}
    if value == "send":
        return {"send": {}}
    return value


def _form(value: Any) -> str:
    if isinstance(value, dict) and ("delay" in value or "template" in value):
        return "step[series]"  # the "[" keeps the tag out of error locations (loader.py)
    return "step[flow]"


AnyStep = Annotated[
    Annotated[SeriesStepModel, Tag("step[series]")] | Annotated[FlowStepModel, Tag("step[flow]")],
    Discriminator(_form),
    BeforeValidator(_bare),
]


def is_flow(steps: Sequence[Any] | None) -> bool:
    return bool(steps) and any(isinstance(s, FlowStepModel) for s in steps or ())


def _names(steps: Sequence[FlowStepModel]) -> dict[str, int]:
    return {s.name: i for i, s in enumerate(steps) if s.name is not None}


def _jumps(step: FlowStepModel) -> Iterator[tuple[str, str]]:
    """(field, target name) of every jump a step makes."""
    if step.wait is not None:
        yield from (("wait.then", step.wait.then), ("wait.else", step.wait.else_))  # type: ignore[misc]
    if step.branch is not None:
        yield from (("branch.then", step.branch.then), ("branch.else", step.branch.else_))  # type: ignore[misc]
    for path, p in (step.split or {}).items():
        yield f"split.{path}.then", p.then  # type: ignore[misc]


def flow_problems(
    steps: Sequence[FlowStepModel], default_template: str | None
) -> Iterator[tuple[str, str]]:
    """(field, message) for mistakes that span a journey's steps."""
    names = _names(steps)
    seen: set[str] = set()
    for i, step in enumerate(steps):
        where = f"steps[{i}]"
        if step.name is not None:
            if step.name in seen:
                yield f"{where}.name", f"duplicate step name {step.name!r}"
            if step.name.isdigit():
                yield f"{where}.name", "a step name must not be a number (indexes are)"
            seen.add(step.name)
        kinds = step.kinds
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            yield where, f"a step is exactly one of {', '.join(KINDS)} (found: {found})"
            continue
        for field, message in _step_problems(step, default_template):
            yield f"{where}.{field}", message
        for field, target in _jumps(step):
            if target is not None and target not in names:
                known = f"named steps: {', '.join(names)}" if names else "no step has a name"
                yield f"{where}.{field}", f"unknown step {target!r} ({known})"
    loop = _spinning_loop(steps, names)
    if loop:
        path = " -> ".join(f"steps[{i}]" for i in loop)
        yield (
            f"steps[{loop[0]}]",
            f"a loop with no wait on it would spin: {path} (add a wait with a duration)",
        )


def _step_problems(step: FlowStepModel, default_template: str | None) -> Iterator[tuple[str, str]]:
    wait, send, split = step.wait, step.send, step.split
    if wait is not None:
        yield from _wait_problems(wait)
    if send is not None:
        if send.template is None and default_template is None:
            yield "send.template", "a send needs a template (or the rule's template as default)"
        if send.send_at is not None and not send.send_at.best_hour:
            yield "send.send_at.best_hour", "send_at only knows best_hour: true"
    if step.branch is not None and step.branch.then is None and step.branch.else_ is None:
        yield "branch", "a branch needs then or else (a step name to jump to)"
    if split is not None and sum(p.weight for p in split.values()) <= 0:
        yield "split", "path weights must add up to more than 0"
    if step.exit is False:
        yield "exit", "write `- exit` (exit: true) or leave the step out"


def _wait_problems(wait: WaitModel) -> Iterator[tuple[str, str]]:
    set_ = [k for k in ("delay", "inactivity", "until") if getattr(wait, k) is not None]
    if len(set_) != 1:
        yield "wait", "a wait is exactly one of delay, inactivity or until"
    if wait.until is not None and wait.within is None:
        yield "wait.within", "until needs within: how long to wait for the event"
    if wait.until is None:
        for key in ("within", "where", "then", "else_"):
            if getattr(wait, key) is not None:
                yield f"wait.{key.rstrip('_')}", f"{key.rstrip('_')} only goes with until"
    if wait.activity is not None and wait.inactivity is None:
        yield "wait.activity", "activity only matters with inactivity"


def _waits(step: FlowStepModel) -> bool:
    """Whether a run stays here for a while (so a loop through it cannot spin)."""
    wait = step.wait
    if wait is None:
        return False
    return wait.until is not None or wait.inactivity is not None or _ms(wait.delay) > 0


def _successors(steps: Sequence[FlowStepModel], names: dict[str, int], i: int) -> list[int]:
    step = steps[i]
    out = [names[t] for _, t in _jumps(step) if t is not None and t in names]
    if step.exit is None and i + 1 < len(steps):
        out.append(i + 1)
    return out


def _spinning_loop(steps: Sequence[FlowStepModel], names: dict[str, int]) -> list[int]:
    """A cycle through steps none of which waits, as indexes (first repeated), or []."""
    instant = {i for i, s in enumerate(steps) if not _waits(s)}
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    path: list[int] = []

    def visit(i: int) -> list[int]:
        state[i] = 1
        path.append(i)
        for j in _successors(steps, names, i):
            if j not in instant:
                continue
            if state.get(j) == 1:
                return [*path[path.index(j) :], j]
            if j not in state:
                found = visit(j)
                if found:
                    return found
        path.pop()
        state[i] = 2
        return []

    for start in sorted(instant):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return []


def _ms(value: str | None) -> int:
    return parse_duration(value) if value is not None else 0


def compile_flow(
    steps: Sequence[FlowStepModel], default_template: str | None, destinations: tuple[str, ...]
) -> tuple[Node, ...]:
    """The engine's program: one node per step, jumps as indexes."""
    names = _names(steps)

    def index(name: str | None) -> int | None:
        return names[name] if name is not None else None

    nodes = []
    for i, step in enumerate(steps):
        wait: Wait | None = None
        action: Action | None = None
        if step.wait is not None:
            wait = _compile_wait(step.wait, index)
        elif step.send is not None:
            s = step.send
            action = Send(
                s.template or default_template,
                tuple(s.destinations) if s.destinations is not None else destinations,
                compiled_expression(s.when) if s.when is not None else None,
                SendAt(parse_duration(s.send_at.within)) if s.send_at is not None else None,
            )
        elif step.branch is not None:
            b = step.branch
            action = Branch(compiled_expression(b.if_), index(b.then), index(b.else_))
        elif step.split is not None:
            action = Split(tuple(Path(n, p.weight, index(p.then)) for n, p in step.split.items()))
        else:
            action = Exit()
        label = step.name if step.name is not None else i
        nodes.append(Node(label, wait, action, i + 1 if i + 1 < len(steps) else None))
    return tuple(nodes)


def _compile_wait(w: WaitModel, index: Any) -> Wait:
    if w.until is not None:
        return Wait(
            "until",
            _ms(w.within),
            until=frozenset(w.until),
            where=compiled_expression(w.where) if w.where is not None else None,
            then=index(w.then),
            otherwise=index(w.else_),
        )
    if w.inactivity is not None:
        activity = frozenset(w.activity) if w.activity is not None else None
        return Wait("inactivity", _ms(w.inactivity), activity=activity)
    return Wait("delay", _ms(w.delay))


def flow_templates(steps: Sequence[FlowStepModel]) -> Iterator[tuple[str, str]]:
    """(field path, template name) for each send's own template."""
    for i, step in enumerate(steps):
        if step.send is not None and step.send.template is not None:
            yield f"steps[{i}].send.template", step.send.template


def flow_destinations(steps: Sequence[FlowStepModel]) -> Iterator[tuple[str, str]]:
    """(field path, destination name) for each send's own destinations."""
    for i, step in enumerate(steps):
        if step.send is not None:
            for j, dest in enumerate(step.send.destinations or ()):
                yield f"steps[{i}].send.destinations[{j}]", dest
