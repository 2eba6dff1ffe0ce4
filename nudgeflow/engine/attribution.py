"""Attribution (issue 19.4): what each send earned, found and counted in one place.

Finding (`Attributor`, called by the core on each event): every rule has a
`conversion: {event, within}` (default `purchase` within 3 days, DEFAULT_* below); a
conversion event is attributed to the rule's latest send before it within the window
(last touch: "last send wins"), once per send, with its revenue: the first of
`properties.revenue`, `total`, `value` that is present and numeric. Opens and clicks
(`message_opened` / `message_clicked` with `properties.trigger_id`, or a signed
click-through that the shell turns into one) are attributed to the send they name,
once per kind (`engage`). Each is a `Conversion` record naming the rule, step and
variant of the send.

Counting (`Attribution`): per rule, step and variant, conversions, revenue, opens and
clicks, fed the same `Conversion` records everywhere: the funnel (engine/funnel.py)
for GET /rules/<name> and the backtest, the analytics aggregates for GET
/experiments/<rule>, so every view counts the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nudgeflow.engine.actions import Action, Conversion
from nudgeflow.engine.rules import Rule
from nudgeflow.engine.state import CLICKED, CONVERTED, OPENED, Fire, UserState
from nudgeflow.engine.stats import VariantCounts
from nudgeflow.engine.steps import Label
from nudgeflow.engine.timefmt import iso_utc

DEFAULT_CONVERSION_EVENT = "purchase"
DEFAULT_CONVERSION_WITHIN_MS = 3 * 86_400_000
REVENUE_PROPERTIES = ("revenue", "total", "value")

Kind = Literal["conversion", "opened", "clicked"]
ENGAGEMENT: dict[str, tuple[Kind, int]] = {
    "message_opened": ("opened", OPENED),
    "message_clicked": ("clicked", CLICKED),
}
_FLAG: dict[str, int] = {"conversion": CONVERTED, "opened": OPENED, "clicked": CLICKED}


def revenue_of(props: Mapping[str, Any]) -> float | None:
    """The first of revenue / total / value that is present and a finite number (a numeric
    string counts; booleans do not)."""
    for name in REVENUE_PROPERTIES:
        value = props.get(name)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                continue
        else:
            continue
        if number == number and abs(number) != float("inf"):
            return number
    return None


def conversion(
    state: UserState, fire: Fire, kind: Kind, etype: str, ts: int, revenue: float | None = None
) -> Conversion:
    return Conversion(
        user_id=state.user_id,
        rule=fire.rule,
        variant=fire.variant,
        trigger_id=fire.trigger_id,
        kind=kind,
        event_type=etype,
        at=iso_utc(ts),
        exposed_at=iso_utc(fire.at),
        step=fire.step,
        revenue=revenue,
    )


def engage(state: UserState, trigger_id: Any, kind: Kind, etype: str, ts: int) -> Conversion | None:
    """An open or click of the send `trigger_id`, the first of its kind; else None."""
    flag = _FLAG[kind]
    for fire in state.fires:
        if fire.trigger_id == trigger_id and not fire.flags & flag:
            fire.flags |= flag
            return conversion(state, fire, kind, etype, ts)
    return None


class Attributor:
    """The rules' conversion events, precomputed; `attribute` runs on each event."""

    def __init__(
        self, rules: Iterable[Rule], on_conversion: Callable[[Rule, Fire], None] | None = None
    ) -> None:
        by_event: dict[str, list[Rule]] = {}
        self.within_ms = 0  # the longest window: how long sends are kept for attribution
        for r in rules:
            if r.conversion_event is not None:
                by_event.setdefault(r.conversion_event, []).append(r)
                self.within_ms = max(self.within_ms, r.conversion_within_ms or 0)
        self.rules = {t: tuple(rs) for t, rs in by_event.items()}
        self.on_conversion = on_conversion  # the bandit learns from it

    def wants(self, etype: str) -> bool:
        return etype in ENGAGEMENT or etype in self.rules

    def attribute(
        self, state: UserState, etype: str, props: Mapping[str, Any], ts: int, out: list[Action]
    ) -> None:
        """Opens/clicks by trigger_id; conversions to each rule's latest send (last touch)."""
        engagement = ENGAGEMENT.get(etype)
        if engagement is not None:
            c = engage(state, props.get("trigger_id"), engagement[0], etype, ts)
            if c is not None:
                out.append(c)
        rules = self.rules.get(etype)
        if not rules:
            return
        revenue = revenue_of(props)
        for rule in rules:
            latest = None
            for fire in state.fires:
                if (
                    fire.rule == rule.name
                    and fire.at <= ts
                    and (latest is None or fire.at >= latest.at)
                ):
                    latest = fire
            within = rule.conversion_within_ms
            if (
                latest is None
                or latest.flags & CONVERTED
                or (within is not None and ts - latest.at > within)
            ):
                continue
            latest.flags |= CONVERTED
            if self.on_conversion is not None:
                self.on_conversion(rule, latest)
            out.append(conversion(state, latest, "conversion", etype, ts, revenue))


# -- counting ----------------------------------------------------------------------------


@dataclass(slots=True)
class Earned:
    """What sends earned: conversions and their revenue, opens, clicks."""

    converted: int = 0
    revenue: float = 0.0
    opened: int = 0
    clicked: int = 0

    def add(self, other: Earned) -> None:
        self.converted += other.converted
        self.revenue += other.revenue
        self.opened += other.opened
        self.clicked += other.clicked

    def counts(self, exposures: int, sent: int, delivered: int) -> VariantCounts:
        """A variant's funnel for engine/stats.py: its sends, and what they earned."""
        return VariantCounts(
            exposures, sent, delivered, self.opened, self.clicked, self.converted, self.revenue
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "converted": self.converted,
            "revenue": round(self.revenue, 2),
            "opened": self.opened,
            "clicked": self.clicked,
        }


_Cell = tuple[str, Label | None, str]  # rule, step, variant


class Attribution:
    """Conversions, revenue, opens and clicks per (rule, step, variant)."""

    def __init__(self) -> None:
        self.cells: dict[_Cell, Earned] = {}

    def add(self, c: Conversion) -> None:
        key = (c.rule, c.step, c.variant)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Earned()
        if c.kind == "conversion":
            cell.converted += 1
            if c.revenue is not None:
                cell.revenue += c.revenue
        elif c.kind == "opened":
            cell.opened += 1
        else:
            cell.clicked += 1

    def by_step(self, rule: str) -> dict[Label, Earned]:
        return self._by(rule, 1)

    def by_variant(self, rule: str) -> dict[str, Earned]:
        return self._by(rule, 2)

    def total(self, rule: str) -> Earned:
        out = Earned()
        for (name, _, _), cell in self.cells.items():
            if name == rule:
                out.add(cell)
        return out

    def _by(self, rule: str, part: int) -> dict[Any, Earned]:
        out: dict[Any, Earned] = {}
        for key, cell in self.cells.items():
            if key[0] == rule and key[part] is not None:
                out.setdefault(key[part], Earned()).add(cell)
        return out

    def view(self, rule: str, event: str | None, within_ms: int | None) -> dict[str, Any]:
        """For GET /rules/<name> and the backtest report: the rule's totals and variants."""
        return {
            "event": event,
            "within_s": within_ms / 1000 if within_ms is not None else None,
            **self.total(rule).as_dict(),
            "variants": {v: e.as_dict() for v, e in sorted(self.by_variant(rule).items())},
        }
