"""The runner's clock and timer index, with a stub engine (the real one: test_runner.py).

The stub arms one timer per user on an "arm" event (deadline = ts + 10) and
records every fire_due call, so these tests pin down *when* the runner asks
the engine to fire, independent of rule semantics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nudgeflow.backtest.runner import Backtest, TimerIndex
from nudgeflow.engine.actions import Action
from nudgeflow.events.model import Event


@dataclass
class StubState:
    deadline: int | None = None

    def next_deadline(self) -> int | None:
        return self.deadline


@dataclass
class StubStep:
    state: StubState
    actions: list[Action] = field(default_factory=list)
    duplicate: bool = False


@dataclass
class StubEngine:
    log: list[tuple[str, str, int]] = field(default_factory=list)
    stuck: bool = False

    def apply(self, state: StubState | None, event: Event, now_ms: int) -> StubStep:
        state = state or StubState()
        self.log.append(("apply", event.user_id, now_ms))
        if event.type == "arm":
            state.deadline = event.ts + 10
        return StubStep(state, duplicate=event.type == "dup")

    def fire_due(self, state: StubState, now_ms: int) -> StubStep:
        self.log.append(("fire", "", now_ms))
        if not self.stuck:
            state.deadline = None
        return StubStep(state)


def ev(user: str, type_: str, ts: int) -> Event:
    return Event(user_id=user, type=type_, ts=ts)


def run(events: Sequence[Event], until: int | None = None, stuck: bool = False) -> StubEngine:
    engine = StubEngine(stuck=stuck)
    Backtest(engine, lambda actions: None).run(events, until)
    return engine


def test_timer_index_orders_by_deadline_and_skips_stale_entries() -> None:
    index = TimerIndex()
    index.set("a", 30)
    index.set("b", 10)
    index.set("a", 5)  # moved earlier: the (30, a) entry is stale
    index.set("c", 20)
    index.set("c", None)  # disarmed
    assert len(index) == 2
    assert index.peek() == 5
    assert index.pop_due(100) == ("a", 5)
    assert index.pop_due(9) is None
    assert index.pop_due(100) == ("b", 10)
    assert index.pop_due(1_000) is None
    assert len(index) == 0


def test_another_users_event_moves_the_clock_and_fires_at_the_deadline() -> None:
    log = run([ev("a", "arm", 100), ev("b", "x", 105), ev("b", "x", 125)]).log
    assert log == [
        ("apply", "a", 100),
        ("apply", "b", 105),
        ("fire", "", 110),  # a's deadline, before b's event at 125 is applied
        ("apply", "b", 125),
    ]


def test_event_exactly_at_the_deadline_comes_after_the_fire() -> None:
    log = run([ev("a", "arm", 100), ev("b", "x", 110)]).log
    assert log[1:] == [("fire", "", 110), ("apply", "b", 110)]


def test_out_of_order_event_applies_on_the_watermark_and_overdue_timer_fires_on_it() -> None:
    engine = StubEngine()
    backtest = Backtest(engine, lambda actions: None)
    backtest.run([ev("b", "x", 200), ev("a", "arm", 100), ev("b", "x", 201)])
    assert engine.log == [
        ("apply", "b", 200),
        ("apply", "a", 200),  # late event: the clock does not go back
        ("fire", "", 200),  # deadline 110 is overdue: fires at the clock, first thing
        ("apply", "b", 201),
    ]
    assert backtest.stats.out_of_order == 1


def test_timers_fire_in_deadline_order_across_users() -> None:
    events = [ev("a", "arm", 100), ev("b", "arm", 95), ev("c", "arm", 99), ev("z", "x", 500)]
    log = run(events).log
    assert [entry[2] for entry in log if entry[0] == "fire"] == [105, 109, 110]


def test_until_fires_only_deadlines_up_to_it() -> None:
    events = [ev("a", "arm", 100), ev("b", "arm", 105)]
    assert [e for e in run(events).log if e[0] == "fire"] == []  # default: last event (105)
    assert [e for e in run(events, until=110).log if e[0] == "fire"] == [("fire", "", 110)]
    assert len([e for e in run(events, until=10_000).log if e[0] == "fire"]) == 2


def test_a_timer_that_does_not_advance_is_skipped_not_looped_on() -> None:
    engine = StubEngine(stuck=True)
    backtest = Backtest(engine, lambda actions: None)
    stats = backtest.run([ev("a", "arm", 100), ev("b", "x", 500)])
    assert stats.stuck_timers == 1
    assert stats.stuck_users == ["a"]


def test_counts_duplicates_and_users() -> None:
    backtest = Backtest(StubEngine(), lambda actions: None)
    stats = backtest.run([ev("a", "x", 1), ev("a", "dup", 2), ev("b", "x", 3)])
    assert (stats.events, stats.duplicates, backtest.users) == (3, 1, 2)
    assert (stats.first_ts, stats.last_ts, stats.until) == (1, 3, 3)
