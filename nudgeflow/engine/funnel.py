"""The per-step funnel of a rule, read off its decisions and conversions (DESIGN §3.1).

Per rule and step: entered, sent, suppressed (by reason), exited (by reason),
converted. Every figure comes from a record the engine already returns, so the
backtest report, the analytics aggregates (GET /rules/<name>) and the metrics count
the same thing:

* entered: an `armed` decision (a step that waits) or one with `detail.entered`
  (the first decision at a step that does not: engine/decisions.py);
* sent: `fired` with `send: true`; a control variant's exposure is suppressed `control`;
* suppressed: `suppressed` by its reason, `condition_false` (a `when` skipped it) and
  `render_failed` (a template, `when` or `entry` over its budget);
* exited: `cancelled` (by the exit_on event type), `exited` (exit, completed,
  restarted, ...), `evicted`;
* converted: a `conversion` attributed to the step's send (Conversion.step), with its
  revenue; counted by engine/attribution.py's `Attribution`, which also has them per
  variant (and the opens and clicks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from nudgeflow.engine.actions import Action, Conversion, Decision
from nudgeflow.engine.attribution import Attribution
from nudgeflow.engine.steps import Label, Node

Stage = tuple[str, str | None]  # (entered | sent | suppressed | exited, reason)
_EXITS = {"cancelled": None, "exited": None, "evicted": "evicted"}
_COUNTED = frozenset({"fired", "suppressed", "condition_false", "render_failed", *_EXITS})


def stages(d: Decision) -> Iterator[Stage]:
    """The funnel stages one decision counts for (usually none or one; a send made on
    arrival counts for entered and sent)."""
    detail = d.detail
    return _stages(d.outcome, d.reason, "entered" in detail, detail.get("send", True) is not False)


def _stages(outcome: str, reason: str | None, entered: bool, send: bool) -> Iterator[Stage]:
    if outcome == "armed" or entered:
        yield "entered", None
    if outcome == "fired":
        yield ("sent", None) if send else ("suppressed", "control")
    elif outcome == "suppressed":
        yield "suppressed", reason or "unknown"
    elif outcome == "condition_false" or outcome == "render_failed":
        yield "suppressed", outcome
    elif outcome in _EXITS:
        yield "exited", _EXITS[outcome] or reason or outcome


def step_of(d: Decision) -> Label | None:
    step = d.detail.get("step")
    return step if isinstance(step, int | str) and not isinstance(step, bool) else None


@dataclass(slots=True)
class StepCounts:
    entered: int = 0
    sent: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)
    exited: Counter[str] = field(default_factory=Counter)
    converted: int = 0
    revenue: float = 0.0

    def add_n(self, stage: str, reason: str | None, n: int = 1) -> None:
        if stage == "entered":
            self.entered += n
        elif stage == "sent":
            self.sent += n
        elif stage == "suppressed":
            self.suppressed[reason or "unknown"] += n
        else:
            self.exited[reason or "unknown"] += n

    def as_dict(self) -> dict[str, Any]:
        return {
            "entered": self.entered,
            "sent": self.sent,
            "suppressed": dict(sorted(self.suppressed.items())),
            "exited": dict(sorted(self.exited.items())),
            "converted": self.converted,
            "revenue": round(self.revenue, 2),
        }


_Key = tuple[str, Label, str, str | None, bool, bool]  # rule, step, outcome, reason, entered, send


class Funnel:
    """Counts per (rule, step); feed it actions, read `rule(name, program)`.

    Adding a decision is one dict update keyed by what its stages depend on; the
    stages are worked out when the funnel is read (the backtest adds every decision).
    """

    def __init__(self) -> None:
        self.raw: dict[_Key, int] = {}
        self.attribution = Attribution()  # conversions, revenue, opens, clicks

    def add_decision(self, d: Decision) -> None:
        detail = d.detail
        step = detail.get("step")
        if step is None or step.__class__ is bool:
            return
        outcome = d.outcome
        entered = "entered" in detail
        if not entered and outcome not in _COUNTED and outcome != "armed":
            return
        send = outcome != "fired" or detail.get("send", True) is not False
        key: _Key = (d.rule, step, outcome, d.reason, entered, send)  # type: ignore[assignment]
        raw = self.raw
        raw[key] = raw.get(key, 0) + 1

    def add_conversion(self, c: Conversion) -> None:
        self.attribution.add(c)

    def add(self, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, Decision):
                self.add_decision(action)
            elif isinstance(action, Conversion):
                self.add_conversion(action)

    def counts(self, rule: str) -> dict[Label, StepCounts]:
        out: dict[Label, StepCounts] = {}
        for (name, step, outcome, reason, entered, send), n in self.raw.items():
            if name != rule:
                continue
            counts = out.setdefault(step, StepCounts())
            for stage, why in _stages(outcome, reason, entered, send):
                counts.add_n(stage, why, n)
        for step, earned in self.attribution.by_step(rule).items():
            counts = out.setdefault(step, StepCounts())
            counts.converted, counts.revenue = earned.converted, earned.revenue
        return out

    def rule(self, name: str, program: Sequence[Node] = ()) -> list[dict[str, Any]]:
        """The rule's steps in program order (then any the program no longer has)."""
        counted = self.counts(name)
        labels: list[Label] = [n.label for n in program]
        kinds = {n.label: n.kind for n in program}
        labels += [s for s in counted if s not in kinds]
        return [
            {
                "step": label,
                "kind": kinds.get(label, "unknown"),
                **counted.get(label, StepCounts()).as_dict(),
            }
            for label in labels
        ]
