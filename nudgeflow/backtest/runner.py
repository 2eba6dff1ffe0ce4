"""Run the live rule engine over a stream of events on a simulated clock.

The clock is the watermark: the largest event time seen so far. Before each
event, every user's timers with a deadline at or before the new watermark
fire in deadline order, each at its own deadline, as a healthy live timers
agent would have fired them (so user A's timer fires when user B's later
event moves the clock, and `fired_at` is not skewed by gaps in the file). A
timer armed already overdue by an out-of-order event fires at the current
watermark. The engine is the same object the Faust agents call, so live and
backtest cannot disagree.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nudgeflow.engine.actions import Action
from nudgeflow.events.model import Event


class _State(Protocol):
    def next_deadline(self) -> int | None: ...


class _Step(Protocol):
    @property
    def state(self) -> Any: ...
    @property
    def actions(self) -> Sequence[Action]: ...
    @property
    def duplicate(self) -> bool: ...


class EngineLike(Protocol):
    """What the runner needs of `nudgeflow.engine.core.Engine`."""

    def apply(self, state: Any, event: Event, now_ms: int) -> Any: ...
    def fire_due(self, state: Any, now_ms: int) -> Any: ...


ActionSink = Callable[[Sequence[Action]], None]


class TimerIndex:
    """Users ordered by their next deadline: a heap with lazy invalidation.

    A user's deadline moves on almost every event (inactivity pushes it), so
    instead of deleting from the heap we remember each user's one valid
    deadline and skip stale heap entries as they surface.
    """

    __slots__ = ("_due", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._due: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._due)

    def set(self, user_id: str, deadline: int | None) -> None:
        due = self._due
        if deadline is None:
            due.pop(user_id, None)
            return
        if due.get(user_id) == deadline:
            return
        due[user_id] = deadline
        heapq.heappush(self._heap, (deadline, user_id))
        if len(self._heap) > 2 * len(due) + 65_536:
            self._heap = [(d, u) for u, d in due.items()]
            heapq.heapify(self._heap)

    def pop_due(self, now_ms: int) -> tuple[str, int] | None:
        """The earliest (user, deadline) due at `now_ms`, removed from the index."""
        heap = self._heap
        due = self._due
        while heap and heap[0][0] <= now_ms:
            deadline, user_id = heapq.heappop(heap)
            if due.get(user_id) == deadline:
                del due[user_id]
                return user_id, deadline
        return None

    def peek(self) -> int | None:
        """The earliest valid deadline (drops stale entries on the way)."""
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None


@dataclass(slots=True)
class RunStats:
    events: int = 0
    duplicates: int = 0
    out_of_order: int = 0  # events older than the watermark when they arrived
    timer_fires: int = 0  # fire_due calls made from the timer index
    stuck_timers: int = 0  # fire_due left a deadline in the past: engine bug, skipped
    first_ts: int | None = None
    last_ts: int | None = None
    watermark: int | None = None
    until: int | None = None
    stuck_users: list[str] = field(default_factory=list)


class Backtest:
    """Feed events in file order; `finish` fires what is due by `until`."""

    def __init__(self, engine: EngineLike, sink: ActionSink) -> None:
        self.engine = engine
        self.sink = sink
        self.states: dict[str, Any] = {}
        self.timers = TimerIndex()
        self.stats = RunStats()
        self._watermark = -(2**63)

    @property
    def users(self) -> int:
        return len(self.states)

    def run(self, events: Iterable[Event], until_ms: int | None = None) -> RunStats:
        for event in events:
            self.feed(event)
        self.finish(until_ms)
        return self.stats

    def feed(self, event: Event) -> None:
        self.apply(event, self.advance(event.ts))

    def advance(self, ts: int) -> int:
        """Count an event at `ts`, move the clock to it and fire what is due; the watermark."""
        stats = self.stats
        if stats.first_ts is None:
            stats.first_ts = ts
        stats.last_ts = ts
        stats.events += 1
        watermark = self._watermark
        if ts > watermark:
            watermark = ts
        elif ts < watermark:
            stats.out_of_order += 1
        heap = self.timers._heap
        if heap and heap[0][0] <= watermark:
            self.fire_due(watermark)  # fires at deadlines, from the old watermark on
        self._watermark = watermark
        return watermark

    def apply(self, event: Event, watermark: int) -> None:
        """Apply one event at the clock `watermark` (already advanced)."""
        stats = self.stats
        uid = event.user_id
        states = self.states
        step = self.engine.apply(states.get(uid), event, watermark)
        if step.duplicate:
            stats.duplicates += 1
        state = step.state
        states[uid] = state
        self.timers.set(uid, state.next_deadline())
        if step.actions:
            self.sink(step.actions)

    def fire_due(self, limit_ms: int) -> None:
        """Walk the clock up to `limit_ms`, firing each due timer at its deadline.

        Between two events the clock moves continuously, so a timer fires at
        its own deadline (as a healthy live worker would), or at the current
        clock if it was armed already overdue (by an out-of-order event).
        """
        timers = self.timers
        heap = timers._heap
        if not heap or heap[0][0] > limit_ms:
            return
        states = self.states
        fire = self.engine.fire_due
        stats = self.stats
        while (due := timers.pop_due(limit_ms)) is not None:
            uid, deadline = due
            now = deadline if deadline > self._watermark else self._watermark
            step = fire(states[uid], now)
            stats.timer_fires += 1
            state = step.state
            states[uid] = state
            following = state.next_deadline()
            if following is not None and following <= deadline:
                stats.stuck_timers += 1
                if len(stats.stuck_users) < 5:
                    stats.stuck_users.append(uid)
                following = None
            timers.set(uid, following)
            if step.actions:
                self.fired(uid, deadline, step.actions)

    def fired(self, user_id: str, deadline: int, actions: Sequence[Action]) -> None:
        """What a timer of `user_id` due at `deadline` produced (the partitioned run
        overrides this to tag it with its place in the one-process order)."""
        self.sink(actions)

    def finish(self, until_ms: int | None = None) -> None:
        """Move the clock to `until_ms` (default: the watermark) and fire what is due."""
        stats = self.stats
        if stats.events == 0 and until_ms is None:
            return
        end = until_ms if until_ms is not None else self._watermark
        self.fire_due(end)
        self._watermark = max(end, self._watermark)
        stats.until = end
        stats.watermark = self._watermark
