"""One engine step, fully encoded before anything leaves the worker (issue 21.5).

All or nothing: the records a step publishes (decisions, triggers, conversions) and the
state it writes are encoded here, in the engine thread, before the agent sends one
record. A step whose state cannot be stored (an integer over 2**64, say) fails here,
and the event goes to the DLQ with no audit trace, rather than leaving an `armed`
decision for a state that never existed. Sending then follows the hold ordering
(tables/checkpoint.py): trigger sent, hold, and only then the state write.
"""

from __future__ import annotations

from dataclasses import dataclass

from nudgeflow.engine.actions import Action, Conversion, Decision, Trigger, encode_action
from nudgeflow.engine.state import UserState, encode_state
from nudgeflow.tables import timeline


@dataclass(slots=True)
class Plan:
    """What the agent sends, in order, and then writes."""

    records: list[tuple[Action, bytes]]  # each action and its record (b"": not audited)
    state: bytes  # the encoded new state
    indexed_before: int | None  # the timer-index entry the stored state names
    indexed: int | None  # the entry the new state names
    refile: bool  # the index entry moves (add the new one, drop the old one)


def plan(
    state: UserState, actions: list[Action], *, consumed: bool = False, version: int = 0
) -> Plan:
    """Encode `actions` and `state` (which it updates: timeline, index entry).

    `consumed`: the user's index entry just came due and must be re-filed or dropped.
    `version`: the live rules version of the engine that decided (each trigger and
    decision carries it as `rule_version`).
    """
    steps = Steps(state.indexed)
    steps.add(state, actions, consumed=consumed, version=version)
    return steps.plan(state)


class Steps:
    """One user's engine steps, one after the other on the same state (agents/batch.py):
    each step's records are encoded as it comes, exactly as `plan` would, and the state
    once, after the last. The same records and the same state bytes as one `plan` per
    step; the index entries in between are never written (only the first and last count).
    """

    def __init__(self, indexed_before: int | None) -> None:
        self.records: list[tuple[Action, bytes]] = []
        self.before = indexed_before  # the entry the stored state names
        self.refile = False

    def add(
        self, state: UserState, actions: list[Action], *, consumed: bool = False, version: int = 0
    ) -> list[tuple[Action, bytes]]:
        """Encode one step's actions (updating `state`'s timeline and index entry);
        returns its records, also appended to `self.records`."""
        late = {a.trigger_id: a.lateness_s for a in actions if isinstance(a, Trigger) and a.late}
        records: list[tuple[Action, bytes]] = []
        audited: list[Decision] = []
        for action in actions:
            if version and not isinstance(action, Conversion):
                action.rule_version = version
            if unaudited(action):
                records.append((action, b""))
                continue
            if isinstance(action, Decision):
                if action.outcome == "fired" and action.trigger_id in late:
                    lateness = late[action.trigger_id]
                    action.detail = {**action.detail, "late": True, "lateness_s": lateness}
                audited.append(action)
            records.append((action, encode_action(action)))
        timeline.remember(state, audited)
        if _refile(state, consumed):
            self.refile = True
        self.records.extend(records)
        return records

    def plan(self, state: UserState) -> Plan:
        """The steps' records and the state after the last, encoded."""
        return Plan(self.records, encode_state(state), self.before, state.indexed, self.refile)


def _refile(state: UserState, consumed: bool) -> bool:
    """Whether the (lazy) timer index entry moves; sets `state.indexed` if so.

    It stays while the real next deadline is not earlier (tables/timers.py).
    """
    have = state.indexed
    want = state.next_deadline()
    keep = have is not None and not consumed and want is not None and want >= have
    if keep or (have is None and want is None):
        return False
    state.indexed = want
    return True


def unaudited(action: Action) -> bool:
    """`rearmed` (an activity event pushed an inactivity deadline) happens on nearly every
    event; it is counted in metrics, and the deadline is in the user's state, but it is not
    written to the audit topic or timeline: it would triple the records per event and say
    nothing that the next armed/fired/cancelled/condition_false record does not."""
    return isinstance(action, Decision) and action.outcome == "rearmed"
