"""The journey machine: moves a rule's runs through its program (DESIGN §3.1).

A run sits at one node (`Armed.step`) with one deadline, which is what the timer
index holds (`UserState.next_deadline()`): a wait's end, an `until`'s `within`, a
deferred send. When the deadline comes (`due`) the node acts: a send goes through
the Firer, a branch or split picks a jump, an exit ends the run, an `until` times
out. Events reach runs through `react`: `exit_on` ends a run at any step, activity
pushes an inactivity wait, an awaited event resumes an `until`. Moving on
(`go`) arrives at the next node: a waiting node gets its deadline, any other is due
at once (the caller's fire loop takes it in deadline order, at the same logical time).

The old forms run here too: their nodes wait the rule's way and send (steps.py).
What differs is only what they always did: no `exited` decision when they end, a
cooldown that ends the series, and an `armed` decision at the arming only when there
is something to wait for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nudgeflow.engine.actions import Action, Decision, DecisionOutcome, Scalar
from nudgeflow.engine.decisions import DEFAULT_VARIANT, run_decision
from nudgeflow.engine.experiments import assign_variant
from nudgeflow.engine.firing import SENT_DONE, SENT_ENDED, Firer
from nudgeflow.engine.rules import Rule
from nudgeflow.engine.scope import WhenScope
from nudgeflow.engine.state import UNREPORTED, Armed, UserState
from nudgeflow.engine.steps import Branch, Exit, Node, Send, Split, Wait, label_of, resume
from nudgeflow.engine.timefmt import iso_utc

if TYPE_CHECKING:
    from nudgeflow.events.model import Event

ENGAGEMENT = frozenset({"message_opened", "message_clicked"})
MAX_ENDED = 64  # remembered run ends per user (reentry never / after D)


# What an event did to a run (plain ints: an Enum member lookup costs ~90 ns in 3.11,
# and this is read on every event a run sees)
UNMOVED = 0
CONSUMED = 1  # the event was activity for the run's wait, or resumed it
ENDED = 2  # exit_on


class Journeys:
    """Transitions of runs; sends go through `firer`."""

    def __init__(self, rules: dict[str, Rule], firer: Firer) -> None:
        self.firer = firer
        self._inactivity_of = {name: _inactivity_table(r) for name, r in rules.items()}

    # -- arriving and leaving ------------------------------------------------------------

    def arrive(
        self,
        state: UserState,
        rule: Rule,
        run: Armed,
        index: int,
        at: int,
        actions: list[Action],
        *,
        reason: str | None = None,
    ) -> None:
        """Put `run` at node `index` at time `at`. `reason` is set for the first arrival
        (the arming event's type)."""
        first = reason is not None
        node = rule.program[index]
        run.step = index
        label = node.label
        run.name = label if isinstance(label, str) else None
        run.deferred = False
        run.flags = UNREPORTED
        wait = node.wait
        if wait is None:
            run.deadline = at
            return
        if wait.kind == "rule" and rule.experiment is None:  # the old forms' first wait
            inactivity = rule.inactivity_ms
            deadline = run.last_activity + inactivity if inactivity is not None else at + wait.ms
        else:
            deadline = self._deadline(rule, run, wait, at)
        run.deadline = deadline
        if rule.flow or not first or deadline > at:
            actions.append(
                run_decision(
                    state.user_id,
                    rule.name,
                    run,
                    node.label,
                    "armed",
                    iso_utc(at),
                    reason,
                    None,
                    iso_utc(deadline),
                )
            )

    def _deadline(self, rule: Rule, run: Armed, wait: Wait, at: int) -> int:
        kind = wait.kind
        if kind == "rule":
            exp = rule.experiment
            if exp is None:  # no variant can override: the rule's own wait
                inactivity = rule.inactivity_ms
                return run.last_activity + inactivity if inactivity is not None else at + wait.ms
            inactivity = self.inactivity(rule, run.variant)
            if inactivity is not None:
                return run.last_activity + inactivity
            variant = exp.variant(run.variant)
            if variant is not None and variant.delay_ms is not None:
                return at + variant.delay_ms
            return at + wait.ms
        if kind == "series":
            return max(run.armed_at + wait.ms, at)
        if kind == "inactivity":
            run.last_activity = at
        return at + wait.ms  # delay, inactivity, until (within)

    def inactivity(self, rule: Rule, variant: str) -> int | None:
        """The old forms' inactivity for this run's variant (None: they wait a delay)."""
        table = self._inactivity_of.get(rule.name)
        if table is None:
            return rule.inactivity_ms
        return table.get(variant, rule.inactivity_ms)

    def go(
        self,
        state: UserState,
        rule: Rule,
        key: str,
        run: Armed,
        target: int | None,
        at: int,
        actions: list[Action],
    ) -> None:
        """Move on to node `target`; None ends the run (it ran off its last step)."""
        if target is None:
            self.end(state, rule, key, run, at, actions, "exited", "completed")
            return
        if target <= run.step:
            run.loops += 1
        self.arrive(state, rule, run, target, at, actions)

    def end(
        self,
        state: UserState,
        rule: Rule,
        key: str,
        run: Armed,
        at: int,
        actions: list[Action],
        outcome: DecisionOutcome,
        reason: str,
    ) -> None:
        """Remove the run. Its decision: always, except an old form's quiet ending."""
        state.armed.pop(key, None)
        if rule.remembers_ends:
            remember_end(state, key, at)
        if outcome == "exited" and not rule.flow:
            return
        deadline = iso_utc(run.deadline) if outcome == "cancelled" else None
        label = run.name if run.name is not None else label_of(rule.program, run.step)
        actions.append(
            run_decision(
                state.user_id,
                rule.name,
                run,
                label,
                outcome,
                iso_utc(at),
                reason,
                None,
                deadline,
            )
        )

    # -- a deadline came -------------------------------------------------------------------

    def due(
        self, state: UserState, rule: Rule, key: str, run: Armed, now_ms: int, actions: list[Action]
    ) -> None:
        """The run's deadline has come: its node acts (or its `until` times out)."""
        at = run.deadline
        node = rule.program[run.step]
        action = node.action
        wait = node.wait
        if action.__class__ is Send:  # the commonest node first
            sent = self.firer.send(state, rule, run, at, now_ms, actions)
            if sent == SENT_DONE:
                if node.next is None and not rule.flow:  # an old form's last step: done
                    state.armed.pop(key, None)
                else:
                    self.go(state, rule, key, run, node.next, at, actions)
            elif sent == SENT_ENDED:
                self.end(state, rule, key, run, at, actions, "exited", "cooldown")
        elif wait is not None and wait.kind == "until":
            target = wait.otherwise if wait.otherwise is not None else node.next
            self._note(state, rule, run, node, "waited", at, "timeout", target, actions)
            self.go(state, rule, key, run, target, at, actions)
        elif isinstance(action, Branch):
            ok, why = action.condition.evaluate_in(WhenScope(state, run, at))
            jump = action.then if ok else action.otherwise
            target = node.next if jump is None else jump
            extra: dict[str, Scalar] = {} if ok or why is None else {"why": why}
            self._note(
                state,
                rule,
                run,
                node,
                "branched",
                at,
                "then" if ok else "else",
                target,
                actions,
                extra,
            )
            self.go(state, rule, key, run, target, at, actions)
        elif isinstance(action, Split):
            path = assign_variant(state.user_id, rule.name, f"split:{node.label}", action.weights)
            jump = action.target(path)
            target = node.next if jump is None else jump
            self._note(state, rule, run, node, "split", at, path, target, actions)
            self.go(state, rule, key, run, target, at, actions)
        elif isinstance(action, Exit):
            self.end(state, rule, key, run, at, actions, "exited", "exit")
        else:  # a wait and nothing else: it is over
            self.go(state, rule, key, run, node.next, at, actions)

    def _note(
        self,
        state: UserState,
        rule: Rule,
        run: Armed,
        node: Node,
        outcome: DecisionOutcome,
        at: int,
        reason: str,
        target: int | None,
        actions: list[Action],
        extra: dict[str, Scalar] | None = None,
    ) -> None:
        to = label_of(rule.program, target) if target is not None else None
        detail: dict[str, Scalar] = {"to": to, **(extra or {})}
        actions.append(
            run_decision(
                state.user_id,
                rule.name,
                run,
                node.label,
                outcome,
                iso_utc(at),
                reason,
                None,
                None,
                detail,
            )
        )

    # -- an event came ---------------------------------------------------------------------

    def react(
        self,
        state: UserState,
        rule: Rule,
        key: str,
        run: Armed,
        event: Event,
        actions: list[Action],
    ) -> int:
        """What `event` does to one run: exit_on ends it, activity pushes its inactivity
        wait, an awaited event resumes its `until`."""
        etype = event.type
        if etype in rule.cancel_on:
            self.end(state, rule, key, run, event.ts, actions, "cancelled", etype)
            return ENDED
        program = rule.program
        if not resume(program, run):  # no node of its name or index since: its timer ends it
            return UNMOVED
        node = program[run.step]
        wait = node.wait
        if wait is None:
            return UNMOVED
        kind = wait.kind
        if kind == "until":
            return self._until(state, rule, key, run, node, wait, event, actions)
        if kind == "rule":
            inactivity = rule.inactivity_ms
            if rule.experiment is not None:
                inactivity = self._inactivity_of[rule.name].get(run.variant, inactivity)
            activity = rule.activity
            counts = activity is None or etype in activity or etype in rule.triggers
        elif kind == "inactivity":
            inactivity = wait.ms
            counts = wait.activity is None or etype in wait.activity
        else:
            return UNMOVED
        if inactivity is None or not counts:
            return UNMOVED
        if event.ts > run.last_activity:
            run.last_activity = event.ts
        deadline = run.last_activity + inactivity
        if deadline > run.deadline:
            run.deadline = deadline
            run.deferred = False
            detail: dict[str, Scalar] = {"step": node.label}  # run_decision, inlined: ...
            if run.instance:  # ... this is the commonest decision
                detail["instance"] = run.instance
            actions.append(
                Decision(
                    user_id=state.user_id,
                    rule=rule.name,
                    outcome="rearmed",
                    at=iso_utc(event.ts),
                    reason=etype,
                    variant=run.variant or DEFAULT_VARIANT,
                    deadline=iso_utc(deadline),
                    detail=detail,
                )
            )
        return CONSUMED

    def _until(
        self,
        state: UserState,
        rule: Rule,
        key: str,
        run: Armed,
        node: Node,
        wait: Wait,
        event: Event,
        actions: list[Action],
    ) -> int:
        etype, ts = event.type, event.ts
        if etype not in wait.until or ts < run.deadline - wait.ms or ts >= run.deadline:
            return UNMOVED  # not awaited, or from before the wait began
        if etype in ENGAGEMENT and not _own_message(state, rule, event):
            return UNMOVED
        if wait.where is not None:
            seen = {"type": etype, "ts": ts, "properties": event.properties}
            ok, _ = wait.where.evaluate_in(WhenScope(state, run, ts, event=seen))
            if not ok:
                return UNMOVED
        target = wait.then if wait.then is not None else node.next
        self._note(state, rule, run, node, "waited", ts, etype, target, actions)
        self.go(state, rule, key, run, target, ts, actions)
        return CONSUMED


def _own_message(state: UserState, rule: Rule, event: Event) -> bool:
    """An open or click resumes a run only for this rule's own messages (when it says
    which: `properties.trigger_id`)."""
    tid = event.properties.get("trigger_id")
    if tid is None:
        return True
    return any(f.trigger_id == tid and f.rule == rule.name for f in state.fires)


def remember_end(state: UserState, key: str, at: int) -> None:
    """Remember when the run `key` ended (or entered, for `reentry: never`); bounded."""
    ended = state.ended
    if ended is None:
        ended = state.ended = {}
    ended[key] = at
    if len(ended) > MAX_ENDED:
        oldest = min(ended, key=ended.__getitem__)
        del ended[oldest]


def _inactivity_table(rule: Rule) -> dict[str, int | None]:
    """Variant name -> its inactivity (the rule's when the variant sets none)."""
    table: dict[str, int | None] = {}
    if rule.experiment is not None:
        for v in rule.experiment.variants:
            table[v.name] = v.inactivity_ms if v.inactivity_ms is not None else rule.inactivity_ms
    table[""] = rule.inactivity_ms  # not yet assigned a variant
    return table


def interest(rule: Rule) -> tuple[frozenset[str], bool]:
    """The event types that matter to the rule's runs, and whether every type does
    (an inactivity wait whose activity is any event)."""
    types = set(rule.triggers) | set(rule.cancel_on)
    every = False
    for node in rule.program:
        wait = node.wait
        if wait is None:
            continue
        if wait.kind == "until":
            types |= wait.until
        elif wait.kind == "inactivity":
            if wait.activity is None:
                every = True
            else:
                types |= wait.activity
        elif wait.kind == "rule" and _may_use_inactivity(rule):
            if rule.activity is None:
                every = True
            else:
                types |= rule.activity
    return frozenset(types), every


def _may_use_inactivity(rule: Rule) -> bool:
    if rule.inactivity_ms is not None:
        return True
    exp = rule.experiment
    return exp is not None and any(v.inactivity_ms is not None for v in exp.variants)
