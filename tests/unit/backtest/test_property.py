"""Property: the backtest and a straightforward reference give the same triggers.

The reference below is written from DESIGN §3 alone, sharing nothing with the
engine but the Event type: one global event-time clock (the watermark),
armed rules in a plain dict, and at every step a brute-force search for the
earliest due timer. For random event sequences over a few users and random
rules (immediate, delay, inactivity with and without an activity list,
cancel_on, cooldown, two-step series), both must produce exactly the same
(rule, user, step, deadline, fired_at) triggers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nudgeflow.backtest.runner import Backtest
from nudgeflow.engine.actions import Action, Trigger
from nudgeflow.engine.core import Engine
from nudgeflow.engine.rules import Rule, SeriesStep
from nudgeflow.events.model import Event

T0 = 1_717_372_800_000
S = 1_000
TYPES = ("view", "cart", "buy", "login")
USERS = ("ana", "ben", "cy")

# -- the reference -------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSpec:
    name: str
    triggers: frozenset[str]
    delays: tuple[int, ...] = (0,)  # step k fires at armed_at + delays[k]
    inactivity: int | None = None  # fire at last activity + inactivity (one step)
    activity: frozenset[str] | None = None  # None: every event is activity
    cancel_on: frozenset[str] = frozenset()
    cooldown: int | None = None


@dataclass
class Arm:
    deadline: int
    armed_at: int
    step: int
    last_activity: int


Fired = tuple[str, str, int, int, int]  # rule, user, step, deadline, fired_at


def reference(
    rules: Sequence[RuleSpec], events: Sequence[Event], until: int | None = None
) -> list[Fired]:
    order = {r.name: i for i, r in enumerate(rules)}
    by_name = {r.name: r for r in rules}
    armed: dict[tuple[str, str], Arm] = {}
    last_fire: dict[tuple[str, str], int] = {}
    seen: set[tuple[str, str]] = set()
    fired: list[Fired] = []
    clock = -(2**63)

    def fire_due(limit: int, only_user: str | None = None) -> None:
        while True:
            due = [
                (arm.deadline, order[rule], user, rule)
                for (user, rule), arm in armed.items()
                if arm.deadline <= limit and only_user in (None, user)
            ]
            if not due:
                return
            deadline, _, user, name = min(due)
            rule = by_name[name]
            arm = armed.pop((user, name))
            last = last_fire.get((user, name))
            if (
                arm.step == 0
                and rule.cooldown is not None
                and last is not None
                and deadline - last < rule.cooldown
            ):
                continue  # suppressed by cooldown: the rule (and any series) is disarmed
            fired.append((name, user, arm.step, deadline, max(deadline, clock)))
            last_fire[(user, name)] = deadline
            if arm.step + 1 < len(rule.delays):
                nxt = max(arm.armed_at + rule.delays[arm.step + 1], deadline)
                armed[(user, name)] = Arm(nxt, arm.armed_at, arm.step + 1, arm.last_activity)

    for event in events:
        fire_due(max(clock, event.ts))  # every timer due by the new watermark, in order
        clock = max(clock, event.ts)
        if event.event_id is not None:
            if (event.user_id, event.event_id) in seen:
                continue
            seen.add((event.user_id, event.event_id))
        for rule in rules:
            key = (event.user_id, rule.name)
            arm = armed.get(key)
            if arm is not None and event.type in rule.cancel_on:
                del armed[key]
            elif arm is not None:
                is_activity = (
                    rule.activity is None
                    or event.type in rule.activity
                    or event.type in rule.triggers
                )
                if rule.inactivity is not None and is_activity:
                    arm.last_activity = max(arm.last_activity, event.ts)
                    arm.deadline = max(arm.deadline, arm.last_activity + rule.inactivity)
            elif event.type in rule.triggers and event.type not in rule.cancel_on:
                wait = rule.inactivity if rule.inactivity is not None else rule.delays[0]
                armed[key] = Arm(event.ts + wait, event.ts, 0, event.ts)
        fire_due(event.ts, only_user=event.user_id)  # rules with no wait fire at once
    if events or until is not None:
        fire_due(until if until is not None else clock)
    return sorted(fired)


# -- the system under test -----------------------------------------------------------------


def to_rule(spec: RuleSpec) -> Rule:
    return Rule(
        name=spec.name,
        triggers=spec.triggers,
        steps=tuple(SeriesStep(delay_ms=d, template=None) for d in spec.delays),
        inactivity_ms=spec.inactivity,
        activity=spec.activity,
        cancel_on=spec.cancel_on,
        cooldown_ms=spec.cooldown,
    )


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def backtest(
    rules: Sequence[RuleSpec], events: Sequence[Event], until: int | None = None
) -> list[Fired]:
    triggers: list[Trigger] = []

    def sink(actions: Sequence[Action]) -> None:
        triggers.extend(a for a in actions if isinstance(a, Trigger))

    Backtest(Engine([to_rule(r) for r in rules]), sink).run(events, until)
    return sorted((t.rule, t.user_id, t.step, ms(t.deadline), ms(t.fired_at)) for t in triggers)


# -- strategies ----------------------------------------------------------------------------

durations = st.sampled_from([1 * S, 5 * S, 30 * S, 60 * S, 120 * S])
types = st.sampled_from(TYPES)
type_sets = st.frozensets(types, max_size=2)


@st.composite
def rule_specs(draw: st.DrawFn, name: str) -> RuleSpec:
    kind = draw(st.sampled_from(["immediate", "delay", "inactivity", "series"]))
    triggers = draw(st.frozensets(types, min_size=1, max_size=2))
    cancel_on = draw(type_sets)
    cooldown = draw(st.none() | durations)
    if kind == "immediate":
        return RuleSpec(name, triggers, cancel_on=cancel_on, cooldown=cooldown)
    if kind == "delay":
        return RuleSpec(name, triggers, (draw(durations),), cancel_on=cancel_on, cooldown=cooldown)
    if kind == "series":
        first = draw(st.sampled_from([0, 5 * S]))
        return RuleSpec(name, triggers, (first, first + draw(durations)), cancel_on=cancel_on)
    return RuleSpec(
        name,
        triggers,
        inactivity=draw(durations),
        activity=draw(st.none() | type_sets),
        cancel_on=cancel_on,
        cooldown=cooldown,
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[RuleSpec], list[Event], int | None]:
    rules = [draw(rule_specs(f"r{i}")) for i in range(draw(st.integers(1, 3)))]
    n = draw(st.integers(0, 25))
    ts = T0
    events: list[Event] = []
    for i in range(n):
        # mostly forward (ties included), sometimes back in time (out of order)
        ts += draw(st.sampled_from([0, 1 * S, 2 * S, 5 * S, 30 * S, 61 * S, 200 * S, -3 * S]))
        repeat = draw(st.integers(0, 9)) == 0 and i > 0
        events.append(
            Event(
                user_id=draw(st.sampled_from(USERS)),
                type=draw(types),
                ts=ts,
                event_id=f"e{draw(st.integers(0, i - 1))}" if repeat else f"e{i}",
            )
        )
    until = draw(st.none() | st.sampled_from([ts + 100 * S, ts + 10_000 * S]))
    return rules, events, until


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_backtest_matches_reference(
    scenario: tuple[list[RuleSpec], list[Event], int | None],
) -> None:
    rules, events, until = scenario
    assert backtest(rules, events, until) == reference(rules, events, until)


# -- the reference itself, on cases worked out by hand -------------------------------------


def ev(user: str, type_: str, seconds: int, event_id: str | None = None) -> Event:
    return Event(user_id=user, type=type_, ts=T0 + seconds * S, event_id=event_id)


def test_reference_inactivity_is_pushed_by_activity_and_fires_on_another_users_event() -> None:
    rule = RuleSpec("idle", frozenset({"cart"}), inactivity=30 * S, cancel_on=frozenset({"buy"}))
    events = [ev("ana", "cart", 0), ev("ana", "view", 20), ev("ben", "login", 100)]
    expected = [("idle", "ana", 0, T0 + 50 * S, T0 + 50 * S)]
    assert reference([rule], events) == expected
    assert backtest([rule], events) == expected


def test_reference_cancel_cooldown_and_series() -> None:
    delay = RuleSpec("d", frozenset({"cart"}), (10 * S,), cancel_on=frozenset({"buy"}))
    cool = RuleSpec("now", frozenset({"login"}), cooldown=60 * S)
    series = RuleSpec("s", frozenset({"view"}), (0, 20 * S), cancel_on=frozenset({"buy"}))
    events = [
        ev("ana", "cart", 0),
        ev("ana", "buy", 5),  # cancels d before its deadline
        ev("ana", "login", 6),
        ev("ana", "login", 30),  # within cooldown: suppressed
        ev("ana", "view", 40),  # series step 0 at once, step 1 at 60
        ev("ana", "login", 66),  # exactly one cooldown after the first: fires
        ev("ana", "login", 66, "dup"),  # suppressed
        ev("ana", "login", 200, "dup"),  # duplicate event id: ignored
    ]
    expected = sorted(
        [
            ("now", "ana", 0, T0 + 6 * S, T0 + 6 * S),
            ("s", "ana", 0, T0 + 40 * S, T0 + 40 * S),
            ("s", "ana", 1, T0 + 60 * S, T0 + 60 * S),
            ("now", "ana", 0, T0 + 66 * S, T0 + 66 * S),
        ]
    )
    assert reference([delay, cool, series], events) == expected
    assert backtest([delay, cool, series], events) == expected
