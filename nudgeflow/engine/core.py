"""The pure rule engine: `Engine.apply(state, event, now)` and `Engine.fire_due(state, now)`.

No Faust, no I/O, no clock: the shell passes `now_ms` (wall clock live, the
watermark in a backtest) and sends the returned actions. Deadlines and `when`
evaluations use event time, so live and backtest agree (docs/architecture.md).

`apply` mutates and returns the state it is given (callers pass a freshly
decoded state or one they own); it:

1. ignores an event whose `event_id` was already applied (`Step.duplicate`);
2. runs every run whose deadline <= event.ts, at its deadline;
3. updates profile, cart, history and the best-time histogram; attributes
   opens/clicks/conversions;
4. per rule interested in the event type (journey.py, runs.py): exit_on ends runs,
   activity pushes inactivity waits, awaited events resume `until` waits, and a
   trigger event starts a run (or is `already_active`, `not_entered`, a restart);
5. runs what is due at event.ts (steps without a wait run at once).

Each rule is a program of steps (engine/steps.py) and each run walks it; the old
forms are the one- and n-step cases, with the states and trigger ids they always had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nudgeflow.engine import besttime
from nudgeflow.engine.actions import Action
from nudgeflow.engine.attribution import Attributor
from nudgeflow.engine.decisions import removed_decision
from nudgeflow.engine.dedupe import Dedupe, id_key, place, remember_key
from nudgeflow.engine.experiments import BanditPosteriors
from nudgeflow.engine.expressions import Expression
from nudgeflow.engine.firing import Firer, Renderer
from nudgeflow.engine.journey import CONSUMED, ENDED, Journeys, interest
from nudgeflow.engine.rules import RUN_SEP, Limits, Rule
from nudgeflow.engine.runs import Starter, rule_of
from nudgeflow.engine.scope import user_tz
from nudgeflow.engine.state import (
    Armed,
    Fire,
    UserState,
    apply_cart,
    merge_traits,
    new_state,
    record_history,
)
from nudgeflow.engine.steps import Branch, Send, resume
from nudgeflow.engine.timefmt import iso_utc

if TYPE_CHECKING:
    from nudgeflow.events.model import Event

_CART_TYPES = frozenset({"cart_add", "cart_remove", "purchase"})
_MAX_FIRES_PER_CALL = 10_000  # guards against a pathological re-arm loop
_UNKNOWN_RANK = (0, 0)  # a rule no longer in the config: priority 0, order 0
_NONE: frozenset[str] = frozenset()


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
        dedupe: Dedupe | None = None,
    ) -> None:
        self.rules: dict[str, Rule] = {r.name: r for r in rules}
        self.limits = limits or Limits()
        self.dedupe = dedupe or Dedupe()
        self._consent = self.limits.consent  # DESIGN §3.2 (engine/consent.py)
        # firing order among due timers: (deadline, -priority, config order, name)
        self._rank = {r.name: (-r.priority, i) for i, r in enumerate(rules)}
        self._listens = {r.name: interest(r) for r in rules}
        self._own_key = {r.name: frozenset({r.name}) for r in rules}
        self._interest: dict[str, tuple[Rule, ...]] = {}
        self._history(rules)
        self.attributor = Attributor(rules, self._converted)  # engine/attribution.py
        within = max(30 * 86_400_000, self.attributor.within_ms)
        # `send_at: {best_hour}` anywhere: keep each user's hour-of-week histogram
        self._best_time = any(
            isinstance(n.action, Send) and n.action.send_at is not None
            for r in rules
            for n in r.program
        )
        quiet = self.limits.quiet_hours
        self._fallback_tz = quiet.fallback_tz if quiet is not None else "UTC"
        # `allocation: bandit` posteriors, learned from this engine's exposures and
        # conversions (per worker; relearned after a restart). Read for GET /experiments.
        self.bandits: dict[str, BanditPosteriors] = {}
        firer = Firer(self.limits, templates, fire_horizon_ms=within, on_exposure=self._exposed)
        firer.prepare(rules)
        self.journeys = Journeys(self.rules, firer)
        self._starter = Starter(self.journeys, self.limits.max_runs, self._bandit)

    def _history(self, rules: Sequence[Rule]) -> None:
        """Which event types to remember, with which numeric properties, for how long."""
        keep: dict[str, set[str]] = {}
        horizon = 0
        for r in rules:
            for expr in _expressions(r):
                for c in expr.counts:
                    keep.setdefault(c.type, set())
                    horizon = max(horizon, c.window_ms)
                for s in expr.sums:
                    keep.setdefault(s.type, set()).add(s.property)
                    horizon = max(horizon, s.window_ms)
        self._history_keep = {t: frozenset(p) for t, p in keep.items()}
        self.history_horizon_ms = horizon

    def _converted(self, rule: Rule, fire: Fire) -> None:
        bandit = self.bandits.get(rule.name)
        if bandit is not None:
            self.bandits[rule.name] = bandit.with_conversion(fire.variant)

    def _exposed(self, rule: Rule, variant: str) -> None:
        bandit = self.bandits.get(rule.name)
        if bandit is not None:
            self.bandits[rule.name] = bandit.with_exposure(variant)

    def _bandit(self, rule: Rule) -> BanditPosteriors | None:
        exp = rule.experiment
        if exp is None or exp.allocation != "bandit":
            return None
        return self.bandits.setdefault(
            rule.name, BanditPosteriors.empty([v.name for v in exp.variants])
        )

    def _interested(self, event_type: str) -> tuple[Rule, ...]:
        rules = self._interest.get(event_type)
        if rules is None:
            rules = tuple(
                r
                for r in self.rules.values()
                if event_type in self._listens[r.name][0] or self._listens[r.name][1]
            )
            self._interest[event_type] = rules
        return rules

    # -- public API ------------------------------------------------------------------------

    def apply(self, state: UserState | None, event: Event, now_ms: int) -> Step:
        if state is None:
            state = new_state(event.user_id)
        event_id = event.event_id
        key = at = None
        if event_id is not None:
            key = id_key(event_id)
            at = place(state, key, event_id)
            if at is None:
                return Step(state, [], duplicate=True)
        actions: list[Action] = []
        ts = event.ts
        armed = state.armed
        if armed and self._any_due(armed, ts):
            self._fire_until(state, ts, now_ms, actions)
        if ts > state.last_ts:
            state.last_ts = ts
        if key is not None:
            remember_key(state, key, ts, self.dedupe, at)
        props = event.properties
        if event.traits:
            merge_traits(state, event.traits)
        etype = event.type
        consent = self._consent
        if consent is not None and (etype in consent.events or event.traits):
            consent.observe(state, etype, props, event.traits, ts)
        if etype in _CART_TYPES or "cart_value" in props or "currency" in props:
            apply_cart(state, etype, props)
        keep = self._history_keep.get(etype)
        if keep is not None:
            record_history(state, etype, ts, props, keep, self.history_horizon_ms)
        if self._best_time and etype in besttime.EVENTS:
            bt = state.activity  # an hour of activity counts once: most events stop here
            if bt is None or ts // besttime.HOUR_MS != bt.hour:
                state.activity = besttime.record(bt, ts, user_tz(state), self._fallback_tz)
        if state.fires and self.attributor.wants(etype):
            self.attributor.attribute(state, etype, props, ts, actions)
        interested = self._interest.get(etype)
        if interested is None:
            interested = self._interested(etype)
        for rule in interested:
            # not a trigger and no run to meet: nothing to do (most activity events)
            if rule.keyed or rule.name in armed or etype in rule.triggers:
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
        """Run every run with deadline <= now, in deadline order (priority ties)."""
        actions: list[Action] = []
        if state.armed:
            self._fire_until(state, now_ms, now_ms, actions)
        return Step(state, actions)

    # -- internals -------------------------------------------------------------------------

    def _fire_until(
        self, state: UserState, limit_ms: int, now_ms: int, actions: list[Action]
    ) -> None:
        armed_map = state.armed
        for _ in range(_MAX_FIRES_PER_CALL):
            key = ""
            best: int | None = None
            tied = False
            for name, armed in armed_map.items():
                deadline = armed.deadline
                if deadline <= limit_ms:
                    if best is None or deadline < best:
                        best, key, tied = deadline, name, False
                    elif deadline == best:
                        tied = True
            if best is None:
                return
            if tied:  # several due at the same time: priority, then config order, then name
                key = self._first_of(armed_map, best)
            armed = armed_map[key]
            rule = self.rules.get(key) if RUN_SEP not in key else self.rules.get(rule_of(key))
            # gone from the live version; else at its node there (the same name, else index)
            if rule is None or not resume(rule.program, armed):
                del armed_map[key]
                gone = "rule" if rule is None else "step"
                at = iso_utc(armed.deadline)
                actions.append(removed_decision(state.user_id, rule_of(key), armed, at, gone))
                continue
            self.journeys.due(state, rule, key, armed, now_ms, actions)

    def _first_of(self, armed_map: dict[str, Armed], deadline: int) -> str:
        rank = self._rank
        ranked = []
        for key, armed in armed_map.items():
            if armed.deadline == deadline:
                rk = rank.get(key)
                if rk is None:
                    rk = rank.get(rule_of(key), _UNKNOWN_RANK)
                ranked.append((rk, key))
        return min(ranked)[1]

    def _react(self, state: UserState, rule: Rule, event: Event, actions: list[Action]) -> None:
        """The event meets the rule's runs, then (if it is a trigger) maybe starts one."""
        etype = event.type
        armed = state.armed
        if rule.keyed:
            self._react_keyed(state, rule, event, actions)
            return
        run = armed.get(rule.name)
        if run is not None:
            reaction = self.journeys.react(state, rule, rule.name, run, event, actions)
            if reaction == ENDED or etype not in rule.triggers:
                return
            if reaction == CONSUMED:  # activity, or it resumed the run
                if rule.restart:
                    self._starter.trigger(state, rule, event, actions, self._own_key[rule.name])
                return
            self._starter.trigger(state, rule, event, actions, _NONE)  # already active?
        elif etype in rule.triggers and etype not in rule.cancel_on:
            self._starter.trigger(state, rule, event, actions, _NONE)

    def _react_keyed(
        self, state: UserState, rule: Rule, event: Event, actions: list[Action]
    ) -> None:
        armed = state.armed
        consumed: frozenset[str] = _NONE  # run keys the event was activity for, or resumed
        if armed:
            prefix = rule.name + RUN_SEP
            moved = set()
            for key in [k for k in armed if k.startswith(prefix)]:
                run = armed.get(key)
                if run is not None and (
                    self.journeys.react(state, rule, key, run, event, actions) == CONSUMED
                ):
                    moved.add(key)
            consumed = frozenset(moved)
        etype = event.type
        if etype in rule.triggers and etype not in rule.cancel_on:
            self._starter.trigger(state, rule, event, actions, consumed)


def _expressions(rule: Rule) -> list[Expression]:
    """Every expression of a rule (their count()/sum() decide what history to keep)."""
    found = [e for e in (rule.when, rule.entry, rule.instance) if e is not None]
    for node in rule.program:
        action, wait = node.action, node.wait
        if isinstance(action, Send) and action.when is not None:
            found.append(action.when)
        elif isinstance(action, Branch):
            found.append(action.condition)
        if wait is not None and wait.where is not None:
            found.append(wait.where)
    return found
