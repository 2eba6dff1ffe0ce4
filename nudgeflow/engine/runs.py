"""Starting runs: which run a trigger event is for, and whether it may start one.

A run is keyed in `UserState.armed` by the rule's name (one run per user: every old
form, so their states are unchanged) or, for a rule with `instance` or
`reentry: always`, by `rule + RUN_SEP + instance` (+ the arming event for `always`).
A trigger for a run that is active is `already_active` unless the rule says
`restart: true` (then the old run exits, reason `restarted`, and a new one starts);
else `reentry` decides (never; after D since the last run of that key ended; always)
and then `entry` (on the arming event, the cart after it; an `entry` over its budget
is `render_failed`, reason the limit, not a silent refusal). Keyed rules keep at most
`Limits.max_runs` runs per user: the oldest is `evicted`, so a hostile producer
cannot grow a user's state without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from nudgeflow.engine.actions import Action, DecisionOutcome, Scalar
from nudgeflow.engine.decisions import run_decision
from nudgeflow.engine.experiments import BanditPosteriors, allocate
from nudgeflow.engine.ids import arming_key
from nudgeflow.engine.journey import Journeys, remember_end
from nudgeflow.engine.rules import RUN_SEP, Rule
from nudgeflow.engine.sandbox.budget import limit_of
from nudgeflow.engine.scope import WhenScope, value_of
from nudgeflow.engine.state import Armed, UserState
from nudgeflow.engine.steps import REENTRY_ALWAYS, REENTRY_ENDED, REENTRY_NEVER, resume
from nudgeflow.engine.timefmt import iso_utc

if TYPE_CHECKING:
    from nudgeflow.events.model import Event


def rule_of(key: str) -> str:
    """The rule name of a run key."""
    return key.split(RUN_SEP, 1)[0]


class Starter:
    """Turns trigger events into runs."""

    def __init__(
        self,
        journeys: Journeys,
        max_runs: int,
        bandit_of: Callable[[Rule], BanditPosteriors | None],
    ) -> None:
        self.journeys = journeys
        self.max_runs = max(1, max_runs)
        self.bandit_of = bandit_of

    def trigger(
        self,
        state: UserState,
        rule: Rule,
        event: Event,
        actions: list[Action],
        consumed: frozenset[str],
    ) -> None:
        """`event` is one of the rule's triggers; `consumed`: run keys it already moved."""
        key: str | None = rule.name
        if not rule.keyed:  # one run per user (every old form): the common case first
            active = state.armed.get(rule.name)
            if active is None and rule.simple_start:  # as the old forms always armed
                run = _new_run(event)
                if rule.experiment is not None:
                    self._allocate(state, rule, run, event)
                state.armed[rule.name] = run
                self.journeys.arrive(state, rule, run, 0, event.ts, actions, reason=event.type)
                return
        run = _new_run(event)
        if rule.keyed:
            key = self._instance_key(state, rule, run, event, actions)
            if key is None:
                return
        assert key is not None
        active = state.armed.get(key)
        if active is not None and not rule.restart:
            if key not in consumed:
                self._already_active(state, rule, active, event, actions)
            return
        if active is None and not _reentry_allows(state, rule, key, event.ts):
            self._refuse(state, rule, run, event, actions, "reentry", reentry=rule.reentry.mode)
            return
        if rule.entry is not None:
            ok, why = rule.entry.evaluate_in(WhenScope(state, run, event.ts))
            if not ok:
                detail: dict[str, Scalar] = {"expression": rule.entry.source}
                if why is not None:
                    detail["why"] = why
                limit = limit_of(why)  # over its budget: render_failed naming the limit
                if limit is None:
                    self._refuse(state, rule, run, event, actions, "entry", **detail)
                else:
                    self._refuse(state, rule, run, event, actions, limit, "render_failed", **detail)
                return
        if active is not None:  # restart: true
            self.journeys.end(state, rule, key, active, event.ts, actions, "exited", "restarted")
        self._start(state, rule, key, run, event, actions)

    def _instance_key(
        self, state: UserState, rule: Rule, run: Armed, event: Event, actions: list[Action]
    ) -> str | None:
        """The run key of a keyed rule (sets `run.instance`); None: no instance value."""
        instance = ""
        if rule.instance is not None:
            found = value_of(rule.instance, WhenScope(state, run, event.ts))
            if found is None:
                source = rule.instance.source
                self._refuse(state, rule, run, event, actions, "instance", expression=source)
                return None
            instance = found
        if rule.reentry.mode == REENTRY_ALWAYS:
            instance += RUN_SEP + arming_key(event.event_id, event.ts)
        run.instance = instance
        return rule.name + RUN_SEP + instance

    def _already_active(
        self, state: UserState, rule: Rule, active: Armed, event: Event, actions: list[Action]
    ) -> None:
        label = rule.program[active.step].label if resume(rule.program, active) else 0
        actions.append(
            run_decision(
                state.user_id,
                rule.name,
                active,
                label,
                "already_active",
                iso_utc(event.ts),
                event.type,
                None,
                iso_utc(active.deadline),
            )
        )

    def _start(
        self,
        state: UserState,
        rule: Rule,
        key: str,
        run: Armed,
        event: Event,
        actions: list[Action],
    ) -> None:
        if rule.experiment is not None:
            self._allocate(state, rule, run, event)
        if rule.keyed:
            self._evict(state, rule, event.ts, actions)
        state.armed[key] = run
        if rule.reentry.mode == REENTRY_NEVER:
            remember_end(state, key, event.ts)
        self.journeys.arrive(state, rule, run, 0, event.ts, actions, reason=event.type)

    def _allocate(self, state: UserState, rule: Rule, run: Armed, event: Event) -> None:
        exp = rule.experiment
        assert exp is not None
        run.variant = allocate(
            state.user_id,
            rule.name,
            exp.name,
            exp.weights,
            controls=[v.name for v in exp.variants if not v.send],
            bandit=self.bandit_of(rule),
            seed_extra=arming_key(event.event_id, event.ts),
        )

    def _evict(self, state: UserState, rule: Rule, at: int, actions: list[Action]) -> None:
        """Make room for one more run of `rule`: the oldest runs end, `evicted`."""
        prefix = rule.name + RUN_SEP
        runs = sorted((r.armed_at, k) for k, r in state.armed.items() if k.startswith(prefix))
        for _, key in runs[: max(0, len(runs) - self.max_runs + 1)]:
            run = state.armed[key]
            self.journeys.end(state, rule, key, run, at, actions, "evicted", "max_runs")

    def _refuse(
        self,
        state: UserState,
        rule: Rule,
        run: Armed,
        event: Event,
        actions: list[Action],
        reason: str,
        outcome: DecisionOutcome = "not_entered",
        /,
        **detail: Scalar,
    ) -> None:
        actions.append(
            run_decision(
                state.user_id,
                rule.name,
                run,
                rule.program[0].label,
                outcome,
                iso_utc(event.ts),
                reason,
                None,
                None,
                detail,
            )
        )


def _new_run(event: Event) -> Armed:
    return Armed(
        deadline=event.ts,
        armed_at=event.ts,
        arm_id=event.event_id,
        arm_type=event.type,
        arm_props=dict(event.properties),
        last_activity=event.ts,
    )


def _reentry_allows(state: UserState, rule: Rule, key: str, at: int) -> bool:
    reentry = rule.reentry
    if reentry.mode == REENTRY_ENDED or reentry.mode == REENTRY_ALWAYS:
        return True
    last = state.ended.get(key) if state.ended is not None else None
    if last is None:
        return True
    if reentry.mode == REENTRY_NEVER:
        return False
    return at - last >= reentry.after_ms
