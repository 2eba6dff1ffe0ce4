"""The pure rule engine: `Engine.apply(state, event, now)` and `Engine.fire_due(state, now)`.

No Faust, no I/O, no clock: the shell passes `now_ms` (wall clock live, the
watermark in a backtest) and sends the returned actions. Deadlines and `when`
evaluations use event time, so live and backtest agree (docs/architecture.md).

`apply` mutates and returns the state it is given (callers pass a freshly
decoded state or one they own); it:

1. ignores an event whose `event_id` was already applied (`Step.duplicate`);
2. fires every armed rule whose deadline <= event.ts, at its deadline;
3. updates profile, cart and history; attributes opens/clicks/conversions;
4. per rule interested in the event type: cancel_on disarms; activity pushes an
   inactivity deadline; a trigger event arms an unarmed rule;
5. fires what is due at event.ts (rules without delay fire at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from nudgeflow.engine.actions import Action, Conversion, Decision, DecisionOutcome, Scalar
from nudgeflow.engine.experiments import BanditPosteriors, allocate
from nudgeflow.engine.firing import DEFAULT_VARIANT, Firer, Renderer
from nudgeflow.engine.ids import arming_key
from nudgeflow.engine.rules import Limits, Rule
from nudgeflow.engine.state import (
    CLICKED,
    CONVERTED,
    OPENED,
    Armed,
    Fire,
    UserState,
    apply_cart,
    merge_traits,
    new_state,
    record_history,
    remember_id,
)
from nudgeflow.engine.timefmt import iso_utc

if TYPE_CHECKING:
    from nudgeflow.events.model import Event

_CART_TYPES = frozenset({"cart_add", "cart_remove", "purchase"})
ConversionKind = Literal["conversion", "opened", "clicked"]
_ENGAGEMENT: dict[str, tuple[ConversionKind, int]] = {
    "message_opened": ("opened", OPENED),
    "message_clicked": ("clicked", CLICKED),
}
_MAX_FIRES_PER_CALL = 10_000  # guards against a pathological re-arm loop
_UNKNOWN_RANK = (0, 0)  # a rule no longer in the config: priority 0, order 0


@dataclass(slots=True)
class Step:
    state: UserState
    actions: list[Action] = field(default_factory=list)
    duplicate: bool = False


class Engine:
    """Compiled rules + limits + templates; everything per-call is precomputed here."""

    def __init__(
        self,
        rules: Sequence[Rule],
        limits: Limits | None = None,
        templates: Renderer | None = None,
    ) -> None:
        self.rules: dict[str, Rule] = {r.name: r for r in rules}
        self.limits = limits or Limits()
        # firing order among due timers: (deadline, -priority, config order, name)
        self._rank = {r.name: (-r.priority, i) for i, r in enumerate(rules)}
        self._inactivity_of = {r.name: _inactivity_table(r) for r in rules}
        self._any_activity = tuple(
            r for r in rules if r.activity is None and self._may_use_inactivity(r)
        )
        self._interest: dict[str, tuple[Rule, ...]] = {}
        # history: which types to remember, with which numeric properties, for how long
        keep: dict[str, set[str]] = {}
        horizon = 0
        for r in rules:
            if r.when is None:
                continue
            for c in r.when.counts:
                keep.setdefault(c.type, set())
                horizon = max(horizon, c.window_ms)
            for s in r.when.sums:
                keep.setdefault(s.type, set()).add(s.property)
                horizon = max(horizon, s.window_ms)
        self._history_keep = {t: frozenset(p) for t, p in keep.items()}
        self.history_horizon_ms = horizon
        conv: dict[str, list[Rule]] = {}
        within = 30 * 86_400_000
        for r in rules:
            exp = r.experiment
            if exp is not None and exp.conversion_event is not None:
                conv.setdefault(exp.conversion_event, []).append(r)
                within = max(within, exp.conversion_within_ms or 0)
        self._conversion_rules = {t: tuple(rs) for t, rs in conv.items()}
        # `allocation: bandit` posteriors, learned from this engine's exposures and
        # conversions (per worker; relearned after a restart). Read for GET /experiments.
        self.bandits: dict[str, BanditPosteriors] = {}
        self._firer = Firer(
            self.limits, templates, fire_horizon_ms=within, on_exposure=self._exposed
        )

    def _exposed(self, rule: Rule, variant: str) -> None:
        bandit = self.bandits.get(rule.name)
        if bandit is not None:
            self.bandits[rule.name] = bandit.with_exposure(variant)

    @staticmethod
    def _may_use_inactivity(rule: Rule) -> bool:
        if rule.inactivity_ms is not None:
            return True
        exp = rule.experiment
        return exp is not None and any(v.inactivity_ms is not None for v in exp.variants)

    def _interested(self, event_type: str) -> tuple[Rule, ...]:
        rules = self._interest.get(event_type)
        if rules is None:
            rules = tuple(
                r
                for r in self.rules.values()
                if event_type in r.triggers
                or event_type in r.cancel_on
                or r in self._any_activity
                or (r.activity is not None and event_type in r.activity)
            )
            self._interest[event_type] = rules
        return rules

    # -- public API ------------------------------------------------------------------------

    def apply(self, state: UserState | None, event: Event, now_ms: int) -> Step:
        if state is None:
            state = new_state(event.user_id)
        event_id = event.event_id
        if event_id is not None and event_id in state.seen_ids:
            return Step(state, [], duplicate=True)
        actions: list[Action] = []
        ts = event.ts
        armed = state.armed
        if armed and self._any_due(armed, ts):
            self._fire_until(state, ts, now_ms, actions)
        if ts > state.last_ts:
            state.last_ts = ts
        if event_id is not None:
            remember_id(state, event_id, ts)
        props = event.properties
        if event.traits:
            merge_traits(state, event.traits)
        etype = event.type
        if etype in _CART_TYPES or "cart_value" in props or "currency" in props:
            apply_cart(state, etype, props)
        keep = self._history_keep.get(etype)
        if keep is not None:
            record_history(state, etype, ts, props, keep, self.history_horizon_ms)
        if state.fires and (etype in _ENGAGEMENT or etype in self._conversion_rules):
            self._attribute(state, event, actions)
        interested = self._interest.get(etype)
        if interested is None:
            interested = self._interested(etype)
        for rule in interested:
            self._react(state, rule, event, actions)
        if armed and self._any_due(armed, ts):
            self._fire_until(state, ts, now_ms, actions)
        return Step(state, actions)

    @staticmethod
    def _any_due(armed: dict[str, Armed], limit_ms: int) -> bool:
        for a in armed.values():  # noqa: SIM110 - a plain loop beats any(<genexpr>) here
            if a.deadline <= limit_ms:
                return True
        return False

    def fire_due(self, state: UserState, now_ms: int) -> Step:
        """Fire every armed rule with deadline <= now, in deadline order (priority ties)."""
        actions: list[Action] = []
        if state.armed:
            self._fire_until(state, now_ms, now_ms, actions)
        return Step(state, actions)

    # -- internals -------------------------------------------------------------------------

    def _fire_until(
        self, state: UserState, limit_ms: int, now_ms: int, actions: list[Action]
    ) -> None:
        armed_map = state.armed
        rank = self._rank
        for _ in range(_MAX_FIRES_PER_CALL):
            due: tuple[int, int, int, str] | None = None
            for name, armed in armed_map.items():
                deadline = armed.deadline
                if deadline <= limit_ms:
                    neg_prio, order = rank.get(name, _UNKNOWN_RANK)
                    key = (deadline, neg_prio, order, name)
                    if due is None or key < due:
                        due = key
            if due is None:
                return
            name = due[3]
            armed = armed_map[name]
            rule = self.rules.get(name)
            if rule is None or armed.step >= len(rule.steps):  # rule removed from config
                del armed_map[name]
                continue
            self._firer.fire(state, rule, armed, armed.deadline, now_ms, actions)

    def _react(self, state: UserState, rule: Rule, event: Event, actions: list[Action]) -> None:
        etype = event.type
        armed = state.armed.get(rule.name)
        if armed is not None and etype in rule.cancel_on:
            del state.armed[rule.name]
            actions.append(
                _event_decision(
                    state,
                    rule,
                    event,
                    "cancelled",
                    armed.variant,
                    armed.deadline,
                    {"step": armed.step},
                )
            )
            armed = None
        if armed is not None:
            inactivity = self._inactivity_of[rule.name].get(armed.variant, rule.inactivity_ms)
            if inactivity is not None and (
                rule.activity is None or etype in rule.activity or etype in rule.triggers
            ):
                if event.ts > armed.last_activity:
                    armed.last_activity = event.ts
                deadline = armed.last_activity + inactivity
                if deadline > armed.deadline:
                    armed.deadline = deadline
                    armed.deferred = False
                    actions.append(
                        _event_decision(state, rule, event, "rearmed", armed.variant, deadline)
                    )
            return
        if etype in rule.triggers and etype not in rule.cancel_on:
            self._arm(state, rule, event, actions)

    def _arm(self, state: UserState, rule: Rule, event: Event, actions: list[Action]) -> None:
        variant_name = ""
        delay = rule.steps[0].delay_ms
        exp = rule.experiment
        if exp is not None:
            bandit = None
            if exp.allocation == "bandit":
                bandit = self.bandits.setdefault(
                    rule.name, BanditPosteriors.empty([v.name for v in exp.variants])
                )
            variant_name = allocate(
                state.user_id,
                rule.name,
                exp.name,
                exp.weights,
                controls=[v.name for v in exp.variants if not v.send],
                bandit=bandit,
                seed_extra=arming_key(event.event_id, event.ts),
            )
            v = exp.variant(variant_name)
            if v is not None and v.delay_ms is not None:
                delay = v.delay_ms
        inactivity = self._inactivity_of[rule.name].get(variant_name, rule.inactivity_ms)
        deadline = event.ts + (inactivity if inactivity is not None else delay)
        state.armed[rule.name] = Armed(
            deadline=deadline,
            armed_at=event.ts,
            arm_id=event.event_id,
            arm_type=event.type,
            arm_props=dict(event.properties),
            variant=variant_name,
            last_activity=event.ts,
        )
        if deadline > event.ts:
            actions.append(
                _event_decision(state, rule, event, "armed", variant_name, deadline, {"step": 0})
            )

    def _attribute(self, state: UserState, event: Event, actions: list[Action]) -> None:
        """Opens/clicks by trigger_id; experiment conversions to the latest exposure."""
        etype, ts = event.type, event.ts
        engagement = _ENGAGEMENT.get(etype)
        if engagement is not None:
            tid = event.properties.get("trigger_id")
            kind, flag = engagement
            for fire in state.fires:
                if fire.trigger_id == tid and not fire.flags & flag:
                    fire.flags |= flag
                    actions.append(self._conversion(state, fire, kind, etype, ts))
                    break
        for rule in self._conversion_rules.get(etype, ()):
            exp = rule.experiment
            assert exp is not None
            latest = None
            for fire in state.fires:
                if (
                    fire.rule == rule.name
                    and fire.at <= ts
                    and (latest is None or fire.at >= latest.at)
                ):
                    latest = fire
            within = exp.conversion_within_ms
            if (
                latest is not None
                and not latest.flags & CONVERTED
                and (within is None or ts - latest.at <= within)
            ):
                latest.flags |= CONVERTED
                bandit = self.bandits.get(rule.name)
                if bandit is not None:
                    self.bandits[rule.name] = bandit.with_conversion(latest.variant)
                actions.append(self._conversion(state, latest, "conversion", etype, ts))

    @staticmethod
    def _conversion(
        state: UserState, fire: Fire, kind: ConversionKind, etype: str, ts: int
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
        )


def _inactivity_table(rule: Rule) -> dict[str, int | None]:
    """Variant name -> its inactivity (the rule's when the variant sets none)."""
    table: dict[str, int | None] = {}
    if rule.experiment is not None:
        for v in rule.experiment.variants:
            table[v.name] = v.inactivity_ms if v.inactivity_ms is not None else rule.inactivity_ms
    table[""] = rule.inactivity_ms  # not yet assigned a variant
    return table


def _event_decision(
    state: UserState,
    rule: Rule,
    event: Event,
    outcome: DecisionOutcome,
    variant: str,
    deadline: int,
    detail: dict[str, Scalar] | None = None,
) -> Decision:
    """A decision about an armed rule that an event caused (its type is the reason)."""
    return Decision(
        user_id=state.user_id,
        rule=rule.name,
        outcome=outcome,
        at=iso_utc(event.ts),
        reason=event.type,
        variant=variant or DEFAULT_VARIANT,
        deadline=iso_utc(deadline),
        detail=detail or {},
    )
